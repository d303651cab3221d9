// `moetrain generate` (docs/design.md section 8, "Generation"): continues
// byte-tokenized prompts with a checkpoint's model on any layout, one token
// at a time, each from the full forward pass over the whole prefix (the
// reference a key/value cache must reproduce). The prefix is padded to the
// model's context; causal attention keeps the padding out of the prefix's
// last position. The last stage gathers that position's logits over its TP
// group and picks the token; every rank learns it by a broadcast.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>

#include "data/byte_tokenizer.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "model/transformer.h"
#include "parallel/pipeline_runner.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/gemm_check.h"
#include "runtime/philox.h"
#include "runtime/threads.h"
#include "runtime/topology.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {

// --prompt, or every "prompt" of --prompts FILE; checked on every rank.
std::vector<std::string> read_prompts(const GenerateOptions& o) {
  MT_CHECK(o.prompt.empty() != o.prompts_file.empty(), "generate needs exactly one of --prompt TEXT and --prompts FILE");
  if (!o.prompt.empty()) return {o.prompt};
  std::ifstream in(o.prompts_file);
  MT_CHECK(in, "--prompts {}: cannot open it", o.prompts_file);
  std::vector<std::string> prompts;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    MT_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string(),
             "--prompts {}: line {} is not a JSON object with a string \"prompt\"", o.prompts_file, line_number);
    prompts.push_back(j["prompt"].get<std::string>());
  }
  MT_CHECK(!prompts.empty(), "--prompts {}: no prompt in it", o.prompts_file);
  return prompts;
}

// The token a row of logits picks: the highest (ties to the lower id) at
// temperature 0; else a draw (u in [0, 1)) from the softmax at the
// temperature over the top-k tokens holding probability top-p.
int pick_token(const std::vector<double>& logits, const GenerateOptions& o, double u) {
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  if (o.temperature == 0.0) return ids[0];
  const size_t k = o.top_k > 0 ? std::min(ids.size(), size_t(o.top_k)) : ids.size();
  std::vector<double> p(k);
  for (size_t i = 0; i < k; ++i) p[i] = std::exp((logits[size_t(ids[i])] - logits[size_t(ids[0])]) / o.temperature);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  size_t kept = 0;
  for (double mass = 0; kept < k && (kept == 0 || mass < o.top_p * total); ++kept) mass += p[kept];
  const double kept_mass = std::accumulate(p.begin(), p.begin() + ptrdiff_t(kept), 0.0);
  double target = u * kept_mass;
  for (size_t i = 0; i < kept; ++i) {
    target -= p[i];
    if (target < 0) return ids[i];
  }
  return ids[kept - 1];
}

template <typename T>
std::vector<Generation> generate(const std::string& path, const ModelConfig& mc, Topology& topo,
                                 const StageSpan& span, const std::vector<std::string>& prompts,
                                 const GenerateOptions& o) {
  const TensorParallel tp{&topo.tp(), topo.coords().tp, topo.tp_size()};
  auto be = make_cpu_backend<T>();
  check_gemm_on_every_rank(*be, topo.world());
  Transformer<T> model(*be, mc, 1, tp, span, topo.dp_size(), {},
                       ExpertParallel{&topo.ep(), topo.expert().ep, topo.ep_size()});
  load_checkpoint(path, MPI_COMM_WORLD, model.params());
  PipelineRunner<T> pipeline(model, PipelineGroup{&topo.pp(), topo.coords().pp, topo.pp_size()},
                             PipelineSchedule::OneFOneB);
  const int S = mc.seq_length, V = data::ByteTokenizer::kVocabSize;
  const TpShape shape = tp_shape(mc, tp.rank, tp.size);
  // The rank that picks: the last stage's first TP rank of replica 0.
  const int picker = rank_of(Coords{0, 0, topo.pp_size() - 1}, topo.tp_size(), topo.dp_size());
  std::vector<Generation> out;
  for (size_t p = 0; p < prompts.size(); ++p) {
    std::vector<int32_t> tokens = data::ByteTokenizer::encode(prompts[p]);
    const auto start = std::chrono::steady_clock::now();
    Generation g{prompts[p], "", 0, 0, {}};
    const size_t prompt_tokens = tokens.size();
    std::vector<int32_t> sample(size_t(S) + 1);
    for (int step = 0; step < o.max_new_tokens && int(tokens.size()) < S; ++step) {
      std::fill(sample.begin(), sample.end(), 0);
      std::copy(tokens.begin(), tokens.end(), sample.begin());
      pipeline.forward(sample.data(), 1);
      double picked[2] = {0, 0};  // the token and its margin over the runner-up, sent together
      if (span.last) {
        // The prefix's last position, every TP rank's slice side by side.
        std::vector<float> row(size_t(shape.vocab) * size_t(tp.size));
        const acc_t<T>* mine = model.logits(0) + (tokens.size() - 1) * size_t(shape.vocab);
        std::copy(mine, mine + shape.vocab, row.begin() + ptrdiff_t(tp.rank) * shape.vocab);
        if (tp.size > 1) topo.tp().all_gather(row.data(), size_t(shape.vocab), DType::F32);
        const std::vector<double> logits(row.begin(), row.begin() + V);  // the padded ids are never tokens
        picked[0] = pick_token(logits, o, philox_uniform(o.seed, p, uint64_t(step)));
        std::vector<double> sorted = logits;
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
        picked[1] = sorted[0] - sorted[1];
      }
      topo.world().broadcast(picked, 2, DType::F64, picker);
      const int32_t token = int32_t(picked[0]);
      if (token == data::ByteTokenizer::kEod) break;
      tokens.push_back(token);
      g.margins.push_back(picked[1]);
    }
    g.tokens = int64_t(tokens.size() - prompt_tokens);
    g.completion = data::ByteTokenizer::decode(std::span<const int32_t>(tokens).subspan(prompt_tokens));
    g.tokens_per_s = double(g.tokens) / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (topo.world_rank() == 0) {
      fmt::print("{}{}\n", g.prompt, g.completion);
      std::fflush(stdout);
    }
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace

std::vector<Generation> run_generate(const GenerateOptions& o) {
  MT_CHECK(!o.load.empty(), "generate needs --load CHECKPOINT_DIR");
  MT_CHECK(o.max_new_tokens >= 1, "--max-new-tokens must be >= 1, got {}", o.max_new_tokens);
  MT_CHECK(o.temperature >= 0, "--temperature must be >= 0 (0: greedy), got {}", o.temperature);
  MT_CHECK(o.top_k >= 0, "--top-k must be >= 0 (0: every token), got {}", o.top_k);
  MT_CHECK(o.top_p > 0 && o.top_p <= 1, "--top-p must lie in (0, 1], got {}", o.top_p);
  const std::vector<std::string> prompts = read_prompts(o);
  Topology topo(MPI_COMM_WORLD, o.topology);
  const Watchdog watchdog(o.distributed_timeout_minutes * 60.0, topo.world_rank());
  apply_thread_count(o.threads, MPI_COMM_WORLD);

  const std::string path = resolve_checkpoint(o.load, topo.world());
  const CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
  const ModelConfig& mc = info.model;
  MT_CHECK(mc.vocab_size >= data::ByteTokenizer::kVocabSize,
           "checkpoint {}: a vocabulary of {} holds no byte tokenizer ({} ids)", path, mc.vocab_size,
           data::ByteTokenizer::kVocabSize);
  for (size_t p = 0; p < prompts.size(); ++p) {
    const size_t n = data::ByteTokenizer::encode(prompts[p]).size();
    MT_CHECK(n >= 1, "prompt {} is empty: there is nothing to continue", p + 1);
    MT_CHECK(int64_t(n) < mc.seq_length,
             "prompt {} is {} tokens, the model's context (--seq-length of the checkpoint) is {}: nothing fits after it",
             p + 1, n, mc.seq_length);
  }
  const StageSpan span = stage_span(mc.num_layers, topo.coords().pp, topo.pp_size(),
                                    o.decoder_first_pipeline_num_layers, o.decoder_last_pipeline_num_layers);
  return o.bf16 ? generate<bf16>(path, mc, topo, span, prompts, o) : generate<float>(path, mc, topo, span, prompts, o);
}

}  // namespace mt
