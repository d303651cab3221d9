// `moetrain eval`: mean cross-entropy of a checkpoint over the first N samples
// of a store, in storage order (no shuffling).
#include <fmt/format.h>

#include <algorithm>

#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "model/transformer.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/threads.h"

namespace mt {

EvalResult run_eval(const EvalOptions& o) {
  MT_CHECK(!o.load.empty(), "eval needs --load CHECKPOINT_DIR");
  MT_CHECK(!o.data_path.empty(), "eval needs --data-path PREFIX");
  MT_CHECK(o.micro_batch_size >= 1, "--micro-batch-size must be >= 1, got {}", o.micro_batch_size);
  MT_CHECK(o.eval_samples >= 0, "--eval-samples must be >= 0, got {}", o.eval_samples);
  int world = 1;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
  MT_CHECK(world == 1, "eval runs on one rank in this build, got {} ranks", world);
  set_thread_count(o.threads > 0 ? o.threads : default_thread_count(MPI_COMM_WORLD));

  const std::string path = resolve_checkpoint(o.load);
  const CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
  const ModelConfig mc = model_config_from_json(info.config.at("model"));
  data::IndexedDataset store(o.data_path);
  store.check_token_range(mc.vocab_size);
  data::SampleStream stream(store, mc.seq_length, 0);
  const int64_t available = int64_t(stream.num_samples());
  const int64_t samples = o.eval_samples > 0 ? o.eval_samples : available;
  MT_CHECK(samples <= available, "--eval-samples {} but store {} holds only {} samples of {}+1 tokens",
           samples, o.data_path, available, mc.seq_length);

  auto be = make_cpu_backend<float>();
  const int micro = int(std::min<int64_t>(o.micro_batch_size, samples));
  Transformer<float> model(*be, mc, micro);
  load_checkpoint(path, MPI_COMM_WORLD, model.params(), nullptr);

  EvalResult r;
  double ce_sum = 0;
  std::vector<int32_t> batch(size_t(micro) * (mc.seq_length + 1));
  for (int64_t first = 0; first < samples; first += micro) {
    const int n = int(std::min<int64_t>(micro, samples - first));
    for (int i = 0; i < n; ++i) stream.read_sample(uint64_t(first + i), batch.data() + i * (mc.seq_length + 1));
    MicroBatchLoss l = model.forward(batch.data(), n);
    ce_sum += l.ce_sum;
    r.tokens += l.tokens;
  }
  r.samples = samples;
  r.loss = ce_sum / double(r.tokens);
  return r;
}

}  // namespace mt
