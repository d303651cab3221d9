// `moetrain generate` (docs/design.md section 11, "Generation"): continues
// prompts with a checkpoint's model and tokenizer on any layout, with a
// key/value cache and continuous batching of up to --max-batch prompts, or
// (--no-kv-cache) each token from the full forward pass over its prefix
// (generation/).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/open_model.h"
#include "generation/batched_decoding.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "runtime/check.h"
#include "runtime/threads.h"
#include "runtime/watchdog.h"
#include "tokenizer/text_stream.h"

namespace mt {

namespace {

// A prompt as given: its text and how many tokens may follow it.
struct PromptText {
  std::string text;
  int max_new;
};

// --prompt, or every line of --prompts FILE: a "prompt" and, optionally, its
// own "max_new_tokens" (else --max-new-tokens); checked on every rank.
std::vector<PromptText> read_prompts(const GenerateOptions& o) {
  MT_CHECK(o.prompt.empty() != o.prompts_file.empty(), "generate needs exactly one of --prompt TEXT and --prompts FILE");
  if (!o.prompt.empty()) return {{o.prompt, o.max_new_tokens}};
  std::ifstream in(o.prompts_file);
  MT_CHECK(in, "--prompts {}: cannot open it", o.prompts_file);
  std::vector<PromptText> prompts;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    MT_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string(),
             "--prompts {}: line {} is not a JSON object with a string \"prompt\"", o.prompts_file, line_number);
    const nlohmann::json max_new = j.value("max_new_tokens", nlohmann::json(o.max_new_tokens));
    MT_CHECK(max_new.is_number_integer() && max_new.get<int64_t>() >= 1 && max_new.get<int64_t>() <= INT32_MAX,
             "--prompts {}: line {}: \"max_new_tokens\" must be an integer >= 1, got {}", o.prompts_file,
             line_number, max_new.dump());
    prompts.push_back({j["prompt"].get<std::string>(), max_new.get<int>()});
  }
  MT_CHECK(!prompts.empty(), "--prompts {}: no prompt in it", o.prompts_file);
  return prompts;
}

Batching batching_of(const std::string& name) {
  MT_CHECK(name == "continuous" || name == "static", "--batching must be continuous or static, got '{}'", name);
  return name == "static" ? Batching::Static : Batching::Continuous;
}

// What the cache costs a sequence (the whole model's, all ranks together),
// and what it would cost with a key/value head a query head (G = H).
void print_cache_size(const ModelConfig& mc, int bytes) {
  const double mib = 1024.0 * 1024.0;
  fmt::print("kv cache: {:.2f} MiB a sequence ({} layers x {} kv heads x {} positions x {} x 2 x {} bytes); "
             "{:.2f} MiB with G = H = {}\n",
             double(kv_cache_bytes_per_sequence(mc, mc.num_query_groups, bytes)) / mib, mc.num_layers,
             mc.num_query_groups, mc.seq_length, mc.head_dim(), bytes,
             double(kv_cache_bytes_per_sequence(mc, mc.num_heads, bytes)) / mib, mc.num_heads);
}

// Prints a lone prompt's continuation as its tokens come, whole characters
// only (several prompts print each whole when all are done).
class Streamer {
 public:
  Streamer(const Tokenizer& tokenizer, const std::vector<Prompt>& prompts, const std::vector<PromptText>& texts,
           bool root) {
    if (root && prompts.size() == 1) {
      stream_ = std::make_unique<TextStream>(tokenizer, prompts[0].tokens);
      fmt::print("{}", texts[0].text);
      std::fflush(stdout);
    }
  }
  bool streaming() const { return stream_ != nullptr; }
  TokenCallback on_token() {
    if (!stream_) return {};
    return [this](size_t, int32_t token) {
      fmt::print("{}", stream_->push(token));
      std::fflush(stdout);
    };
  }
  void finish() {
    if (stream_) fmt::print("{}\n", stream_->finish());
  }

 private:
  std::unique_ptr<TextStream> stream_;
};

template <typename T>
std::vector<Generation> generate(const std::string& path, const ModelConfig& mc, Topology& topo,
                                 const Tokenizer& tokenizer, const std::vector<PromptText>& texts,
                                 const std::vector<Prompt>& prompts, const GenerateOptions& o, Batching batching) {
  // The cache's steps take up to max_batch prompts at once, S rows each.
  const int sequences = o.no_kv_cache ? 1 : std::min(o.max_batch, int(prompts.size()));
  const ModelLayout layout{.micro_batch = sequences,
                           .first_stage_layers = o.decoder_first_pipeline_num_layers,
                           .last_stage_layers = o.decoder_last_pipeline_num_layers};
  const std::unique_ptr<RankModel<T>> opened = open_model<T>(path, mc, layout, topo);
  Transformer<T>& model = opened->model;
  PipelineRunner<T>& pipeline = opened->pipeline;
  const bool root = topo.world_rank() == 0;
  Sampling sampling = o.sampling;
  sampling.vocab = tokenizer.vocab_size();
  sampling.eod = tokenizer.eod();
  sampling.gaps = tokenizer.gaps();
  if (root && !o.no_kv_cache) print_cache_size(mc, int(sizeof(T)));
  Streamer streamer(tokenizer, prompts, texts, root);
  const auto start = std::chrono::steady_clock::now();
  BatchedContinuations run;
  if (o.no_kv_cache) {
    for (size_t p = 0; p < prompts.size(); ++p) {
      run.continuations.push_back(continue_prompt(pipeline, model, topo, prompts[p].tokens, prompts[p].max_new,
                                                  sampling, p, streamer.on_token()));
      run.steps += run.continuations.back().steps;
    }
  } else {
    KvCache<T> cache = model.make_kv_cache(sequences);
    run = continue_prompts(pipeline, model, cache, topo, prompts, sampling, batching, streamer.on_token());
  }
  streamer.finish();
  const std::vector<Continuation>& done = run.continuations;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<Generation> out;
  int64_t generated = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const Continuation& c = done[p];
    out.push_back({texts[p].text, decode_continuation(tokenizer, prompts[p].tokens, c.tokens),
                   int64_t(c.tokens.size()), double(c.tokens.size()) / std::max(c.seconds, 1e-9), c.margins});
    generated += int64_t(c.tokens.size());
    if (root && !streamer.streaming()) fmt::print("{}{}\n", out.back().prompt, out.back().completion);
  }
  if (root)
    fmt::print("generated {} tokens for {} prompts in {} steps, {:.3f} s: {:.1f} tokens/s ({})\n", generated,
               prompts.size(), run.steps, seconds, double(generated) / seconds,
               o.no_kv_cache ? std::string("no cache: the full pass over each prefix")
                             : fmt::format("kv cache, {} batching of up to {}", o.batching, sequences));
  std::fflush(stdout);
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
  MT_CHECK(o.max_batch >= 1, "--max-batch must be >= 1, got {}", o.max_batch);
  const Batching batching = batching_of(o.batching);
  const std::vector<PromptText> texts = read_prompts(o);
  Topology topo(MPI_COMM_WORLD, o.topology);
  const Watchdog watchdog(o.distributed_timeout_minutes * 60.0, topo.world_rank());
  apply_thread_count(o.threads, MPI_COMM_WORLD);

  const std::string path = resolve_checkpoint(o.load, topo.world());
  const CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
  const ModelConfig& mc = info.model;
  const TokenizerSpec spec = checkpoint_tokenizer(path, o.tokenizer);
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(spec);
  MT_CHECK(mc.vocab_size >= tokenizer->vocab_size(), "checkpoint {}: a vocabulary of {} holds no {} ({} ids)", path,
           mc.vocab_size, spec.options.type, tokenizer->vocab_size());
  std::vector<Prompt> prompts;
  for (const PromptText& t : texts) {
    prompts.push_back({tokenizer->encode(t.text), t.max_new});
    const size_t n = prompts.back().tokens.size();
    MT_CHECK(n >= 1, "prompt {} is empty: there is nothing to continue", prompts.size());
    MT_CHECK(int64_t(n) < mc.seq_length,
             "prompt {} is {} tokens, the model's context (--seq-length of the checkpoint) is {}: nothing fits after it",
             prompts.size(), n, mc.seq_length);
  }
  return o.bf16 ? generate<bf16>(path, mc, topo, *tokenizer, texts, prompts, o, batching)
                : generate<float>(path, mc, topo, *tokenizer, texts, prompts, o, batching);
}

}  // namespace mt
