// `moetrain train`: the training loop. One optimizer step consumes a global
// batch of consecutive stream positions, cut into micro-batches whose
// gradients accumulate; the loss is the mean CE over all the batch's tokens
// plus the mean over micro-batches of their summed aux losses.
#include <fmt/format.h>

#include <chrono>
#include <filesystem>

#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "launch/progress.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/threads.h"
#include "runtime/topology.h"

namespace mt {

namespace {

nlohmann::json run_config_json(const TrainOptions& o) {
  return {{"model", model_config_to_json(o.model)},
          {"micro_batch_size", o.micro_batch_size},
          {"global_batch_size", o.global_batch_size},
          {"data_path", o.data_path},
          {"train_iters", o.train_iters},
          {"train_samples", o.train_samples},
          {"lr", o.lr.lr},
          {"min_lr", o.lr.min_lr},
          {"lr_warmup_samples", o.lr.warmup_samples},
          {"lr_decay_samples", o.lr.decay_samples},
          {"lr_decay_style", o.lr.decay_style},
          {"adam_beta1", o.adam.beta1},
          {"adam_beta2", o.adam.beta2},
          {"adam_eps", o.adam.eps},
          {"weight_decay", o.adam.weight_decay},
          {"clip_grad", o.adam.clip_grad},
          {"seed", o.seed}};
}

// A checkpoint of another model shape cannot be resumed: name every field
// that differs.
void check_same_model(const ModelConfig& ours, const nlohmann::json& saved, const std::string& path) {
  const nlohmann::json mine = model_config_to_json(ours);
  const nlohmann::json& theirs = saved.at("model");
  std::string diffs;
  for (const auto& [key, value] : mine.items())
    if (!theirs.contains(key) || theirs.at(key) != value)
      diffs += fmt::format(" {}: checkpoint {} vs run {};", key,
                           theirs.contains(key) ? theirs.at(key).dump() : "missing", value.dump());
  MT_CHECK(diffs.empty(), "checkpoint {} is of a different model:{}", path, diffs);
}

std::string byte_size(double bytes) {
  return fmt::format("{:.2f} MiB", bytes / (1024.0 * 1024.0));
}

}  // namespace

TrainResult run_train(TrainOptions o) {
  resolve_and_validate(o);
  Topology topo(MPI_COMM_WORLD, o.topology);
  const bool root = topo.world_rank() == 0;
  MT_CHECK(topo.tp_size() == 1 && topo.pp_size() == 1 && topo.dp_size() == 1,
           "this build trains on one rank only: tensor, pipeline and data parallelism are not "
           "available yet (asked for TP={} PP={} DP={})",
           topo.tp_size(), topo.pp_size(), topo.dp_size());
  const int threads = o.threads > 0 ? o.threads : default_thread_count(MPI_COMM_WORLD);
  set_thread_count(threads);

  const ModelConfig& mc = o.model;
  data::IndexedDataset store(o.data_path);
  store.check_token_range(mc.vocab_size);
  data::SampleStream stream(store, mc.seq_length, o.seed);

  const int64_t global = o.global_batch_size, micro = o.micro_batch_size;
  const int64_t num_micro = global / micro;
  const int64_t total_iters = total_iterations(o);

  auto be = make_cpu_backend<float>();
  Transformer<float> model(*be, mc, int(micro));
  Parameters<float>& params = model.params();
  AdamW<float> optim(*be, o.adam, params.size());
  params.initialise(*be, o.seed);
  TrainState state;
  if (!o.load.empty()) {
    const std::string path = resolve_checkpoint(o.load);
    CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
    check_same_model(mc, info.config, path);
    load_checkpoint(path, MPI_COMM_WORLD, params, &optim);
    state = info.state;
    if (root) fmt::print("resumed from {} at iteration {} ({} samples consumed)\n", path,
                         state.iteration, state.consumed_samples);
  }

  const nlohmann::json config = run_config_json(o);
  const double flops_per_token = mc.train_flops_per_token();
  const int64_t tokens_per_step = global * mc.seq_length;
  if (root) {
    fmt::print("{}", topo.table());
    fmt::print("model: {} layers, d={}, {} heads ({} kv), {} experts top-{}, F={}, V={}, S={}\n",
               mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_query_groups, mc.num_experts,
               mc.router_topk, mc.ffn_hidden_size, mc.vocab_size, mc.seq_length);
    fmt::print("parameters: {} total, {} active per token; per rank: weights {}, grads {}, "
               "optimizer {}\n",
               mc.num_parameters(), mc.num_active_parameters(),
               byte_size(4.0 * params.size()), byte_size(4.0 * params.size()),
               byte_size(8.0 * params.size()));
    fmt::print("data: {} ({} tokens, {} samples of {}+1)\n", o.data_path, store.num_tokens(),
               stream.num_samples(), mc.seq_length);
    fmt::print("training {} steps of {} samples ({} micro-batches of {}), {} threads, {} backend\n",
               total_iters, global, num_micro, micro, threads, be->name());
    std::fflush(stdout);
  }

  std::string metrics_path = o.metrics_file;
  if (metrics_path.empty() && !o.save.empty()) {
    std::filesystem::create_directories(o.save);
    metrics_path = (std::filesystem::path(o.save) / "metrics.jsonl").string();
  }
  MetricsWriter metrics(root ? metrics_path : "");

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto interval_start = start;
  int64_t interval_steps = 0;
  double interval_loss = 0, interval_aux = 0;
  TrainResult result;
  const double ce_scale = 1.0 / double(tokens_per_step), aux_scale = 1.0 / double(num_micro);
  std::vector<int32_t> batch(size_t(micro) * (mc.seq_length + 1));

  while (state.iteration < total_iters) {
    const double lr = learning_rate(o.lr, state.consumed_samples);
    be->fill(params.grads.data(), 0.0f, params.size());
    double ce_sum = 0, aux_sum = 0;
    for (int64_t j = 0; j < num_micro; ++j) {
      for (int64_t i = 0; i < micro; ++i) {
        const uint64_t position = uint64_t(state.consumed_samples + j * micro + i);
        stream.read_sample(stream.sample_at(position), batch.data() + i * (mc.seq_length + 1));
      }
      MicroBatchLoss l = model.forward_backward(batch.data(), int(micro), ce_scale, aux_scale);
      ce_sum += l.ce_sum;
      aux_sum += l.aux;
    }
    const double loss = ce_sum / double(tokens_per_step), aux = aux_sum / double(num_micro);
    MT_CHECK(std::isfinite(loss), "loss is {} at iteration {}", loss, state.iteration + 1);
    const double grad_norm = optim.step(params, lr);
    state.iteration += 1;
    state.consumed_samples += global;
    state.consumed_tokens += tokens_per_step;
    result.iterations = state.iteration;
    result.last_loss = loss;
    interval_loss += loss;
    interval_aux += aux;
    interval_steps += 1;

    const bool last = state.iteration == total_iters;
    if (state.iteration % o.log_interval == 0 || last) {
      const auto now = Clock::now();
      const double interval_s = std::chrono::duration<double>(now - interval_start).count();
      StepMetrics m;
      m.step = state.iteration;
      m.total_steps = total_iters;
      m.loss = interval_loss / interval_steps;
      m.aux_loss = interval_aux / interval_steps;
      m.lr = lr;
      m.grad_norm = grad_norm;
      m.global_batch = global;
      m.global_batch_tokens = tokens_per_step;
      m.consumed_samples = state.consumed_samples;
      m.tokens_per_s = interval_steps * tokens_per_step / interval_s;
      m.gflops_per_s = m.tokens_per_s * flops_per_token / 1e9;
      m.elapsed_s = std::chrono::duration<double>(now - start).count();
      m.eta_s = (total_iters - state.iteration) * interval_s / interval_steps;
      if (root) {
        fmt::print("{}\n", progress_line(m));
        std::fflush(stdout);
      }
      metrics.write(to_json(m));
      interval_start = now;
      interval_steps = 0;
      interval_loss = interval_aux = 0;
    }
    const bool save_now = o.save_interval > 0 && state.iteration % o.save_interval == 0;
    if (!o.save.empty() && (save_now || last)) {
      save_checkpoint(o.save, topo, params, optim, state, o.seed, config);
      if (root) {
        fmt::print("saved checkpoint {}/{}\n", o.save, checkpoint_dir_name(state.iteration));
        std::fflush(stdout);
      }
    }
  }
  return result;
}

}  // namespace mt
