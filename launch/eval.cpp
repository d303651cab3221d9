// `moetrain eval`: mean cross-entropy of a checkpoint over the first N samples
// of a store, in storage order (no shuffling), on any layout: each
// data-parallel replica takes a contiguous share of the samples and runs them
// through its TP x PP model; the sums meet in one all-reduce.
#include <fmt/format.h>

#include <algorithm>

#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "parallel/pipeline_runner.h"
#include "model/transformer.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/gemm_check.h"
#include "runtime/threads.h"
#include "runtime/topology.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {

// This rank's summed cross-entropy and tokens over samples [begin, end) (of
// a replica's share of at most `share`) in precision T: counted once, on the
// last stage's first TP rank.
template <typename T>
std::pair<double, double> evaluate(const std::string& path, const ModelConfig& mc,
                                   Topology& topo, const StageSpan& span, data::SampleStream& stream, int64_t begin,
                                   int64_t end, int64_t share, int micro) {
  const TensorParallel tp{&topo.tp(), topo.coords().tp, topo.tp_size()};
  auto be = make_cpu_backend<T>();
  check_gemm_on_every_rank(*be, topo.world());
  Transformer<T> model(*be, mc, micro, tp, span, topo.dp_size(), {},
                       ExpertParallel{&topo.ep(), topo.expert().ep, topo.ep_size()});
  load_checkpoint(path, MPI_COMM_WORLD, model.params());
  PipelineRunner<T> pipeline(model, PipelineGroup{&topo.pp(), topo.coords().pp, topo.pp_size()},
                             PipelineSchedule::OneFOneB);
  double ce_sum = 0, tokens = 0;
  std::vector<int32_t> batch(size_t(micro) * (mc.seq_length + 1));
  // Under expert parallelism every rank of an EP group takes part in each
  // micro-batch's all-to-all: a replica with fewer samples left runs its
  // first sample again (uncounted) until the longest share is done.
  const int64_t rounds = topo.ep_size() > 1 ? (share + micro - 1) / micro : (end - begin + micro - 1) / micro;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t first = begin + round * micro;
    const bool counted = first < end;
    const int n = counted ? int(std::min<int64_t>(micro, end - first)) : 1;
    for (int i = 0; i < n; ++i)
      stream.read_sample(uint64_t(counted ? first + i : 0), batch.data() + i * (mc.seq_length + 1));
    const MicroBatchLoss l = pipeline.forward(batch.data(), n);
    if (counted && span.last && tp.rank == 0) {
      ce_sum += l.ce_sum;
      tokens += double(l.tokens);
    }
  }
  return {ce_sum, tokens};
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
  data::IndexedDataset store(o.data_path);
  store.check_token_range(mc.vocab_size);
  data::SampleStream stream(store, mc.seq_length, 0);
  const int64_t available = int64_t(stream.num_samples());
  const int64_t samples = o.eval_samples > 0 ? o.eval_samples : available;
  MT_CHECK(samples <= available, "--eval-samples {} but store {} holds only {} samples of {}+1 tokens",
           samples, o.data_path, available, mc.seq_length);

  // This rank's part of the model and its replica's share of the samples.
  const int stage = topo.coords().pp, stages = topo.pp_size();
  const StageSpan span = stage_span(mc.num_layers, stage, stages, o.decoder_first_pipeline_num_layers,
                                    o.decoder_last_pipeline_num_layers);
  const int64_t share = (samples + topo.dp_size() - 1) / topo.dp_size();
  const int64_t begin = std::min(samples, topo.coords().dp * share), end = std::min(samples, begin + share);

  const int micro = int(std::max<int64_t>(1, std::min<int64_t>(o.micro_batch_size, share)));
  const auto [ce_sum, tokens] =
      o.bf16 ? evaluate<bf16>(path, mc, topo, span, stream, begin, end, share, micro)
             : evaluate<float>(path, mc, topo, span, stream, begin, end, share, micro);
  double sums[2] = {ce_sum, tokens};
  topo.world().all_reduce_sum(sums, 2);
  EvalResult r;
  r.samples = samples;
  r.tokens = int64_t(sums[1]);
  r.loss = sums[0] / sums[1];
  return r;
}

}  // namespace mt
