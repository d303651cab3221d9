// `moetrain generate` (docs/design.md section 8, "Generation"): continues
// byte-tokenized prompts with a checkpoint's model on any layout, one token
// at a time, each from the full forward pass over the whole prefix
// (launch/generation.h; the reference a key/value cache must reproduce).
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
#include "launch/generation.h"
#include "model/transformer.h"
#include "parallel/pipeline_runner.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/gemm_check.h"
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
  std::vector<Generation> out;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto start = std::chrono::steady_clock::now();
    const Continuation c =
        continue_prompt(pipeline, model, topo, data::ByteTokenizer::encode(prompts[p]), o.max_new_tokens, o.sampling, p);
    Generation g{prompts[p], data::ByteTokenizer::decode(c.tokens), int64_t(c.tokens.size()), 0, c.margins};
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
  const Sampling& s = o.sampling;
  MT_CHECK(s.temperature >= 0, "--temperature must be >= 0 (0: greedy), got {}", s.temperature);
  MT_CHECK(s.top_k >= 0, "--top-k must be >= 0 (0: every token), got {}", s.top_k);
  MT_CHECK(s.top_p > 0 && s.top_p <= 1, "--top-p must lie in (0, 1], got {}", s.top_p);
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
