// `moetrain eval`: mean cross-entropy of a checkpoint over the first N samples
// of a store, in storage order (no shuffling), on any layout
// (training/loss_over_samples.h).
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/open_model.h"
#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "runtime/check.h"
#include "runtime/threads.h"
#include "runtime/watchdog.h"
#include "training/loss_over_samples.h"

namespace mt {

namespace {

// The loss of the first `samples` samples in precision T (training/loss_over_samples.h).
template <typename T>
LossOverSamples evaluate(const std::string& path, const ModelConfig& mc, Topology& topo, const EvalOptions& o,
                         const data::SampleStream& stream, int64_t samples) {
  const int micro = replica_share(samples, topo, o.micro_batch_size).micro;
  const ModelLayout layout{.micro_batch = micro,
                           .first_stage_layers = o.decoder_first_pipeline_num_layers,
                           .last_stage_layers = o.decoder_last_pipeline_num_layers};
  const std::unique_ptr<RankModel<T>> m = open_model<T>(path, mc, layout, topo);
  return loss_over_samples(m->pipeline, topo, stream, samples, mc.seq_length, micro);
}

}  // namespace

EvalResult run_eval(const EvalOptions& o) {
  MT_CHECK(!o.load.empty(), "eval needs --load CHECKPOINT_DIR");
  MT_CHECK(!o.data_path.empty(), "eval needs --data-path PREFIX");
  MT_CHECK(o.micro_batch_size >= 1, "--micro-batch-size must be >= 1, got {}", o.micro_batch_size);
  MT_CHECK(o.eval_samples >= 0, "--eval-samples must be >= 0, got {}", o.eval_samples);
  Topology topo(MPI_COMM_WORLD, o.topology);
  const Watchdog watchdog(o.distributed_timeout_minutes * 60.0, topo.world_rank());
  apply_thread_count(o.threads, MPI_COMM_WORLD);

  const std::string path = resolve_checkpoint(o.load, topo.world());
  const CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
  ModelConfig mc = info.model;
  MT_CHECK(o.seq_length >= 0 && o.rotary_base >= 0 && o.rotary_interpolation >= 0,
           "--seq-length, --rotary-base and --rotary-seq-len-interpolation-factor must be >= 0 (0: the "
           "checkpoint's), got {}, {}, {}",
           o.seq_length, o.rotary_base, o.rotary_interpolation);
  if (o.seq_length > 0) mc.seq_length = o.seq_length;
  if (o.rotary_base > 0) mc.rope_theta = o.rotary_base;
  if (o.rotary_interpolation > 0) mc.rope_interpolation = o.rotary_interpolation;
  checkpoint_tokenizer(path, o.tokenizer);  // tokenizer flags, if given, must name the model's
  data::IndexedDataset store(o.data_path);
  store.check_token_range(mc.vocab_size);
  data::SampleStream stream(store, mc.seq_length, 0);
  const int64_t available = int64_t(stream.num_samples());
  const int64_t samples = o.eval_samples > 0 ? o.eval_samples : available;
  MT_CHECK(samples <= available, "--eval-samples {} but store {} holds only {} samples of {}+1 tokens",
           samples, o.data_path, available, mc.seq_length);

  const LossOverSamples l = o.bf16 ? evaluate<bf16>(path, mc, topo, o, stream, samples)
                                   : evaluate<float>(path, mc, topo, o, stream, samples);
  EvalResult r;
  r.samples = samples;
  r.tokens = int64_t(l.tokens);
  r.loss = l.mean();
  return r;
}

}  // namespace mt
