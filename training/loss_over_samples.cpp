#include "training/loss_over_samples.h"

#include <algorithm>
#include <vector>

namespace mt {

SampleShare replica_share(int64_t samples, const Topology& topo, int micro_batch_size) {
  const int64_t share = (samples + topo.dp().size - 1) / topo.dp().size;
  SampleShare s;
  s.begin = std::min(samples, topo.coords().dp * share);
  s.end = std::min(samples, s.begin + share);
  s.micro = int(std::max<int64_t>(1, std::min<int64_t>(micro_batch_size, share)));
  s.rounds = topo.ep().size > 1 ? (share + s.micro - 1) / s.micro : (s.end - s.begin + s.micro - 1) / s.micro;
  return s;
}

template <typename T>
LossOverSamples loss_over_samples(PipelineRunner<T>& pipeline, Topology& topo, const data::SampleStream& stream,
                                  int64_t samples, int seq_length, int micro_batch_size) {
  const SampleShare s = replica_share(samples, topo, micro_batch_size);
  // Counted once: on the last stage (which computes the loss), TP rank 0.
  const bool counting = topo.coords().pp == topo.pp().size - 1 && topo.coords().tp == 0;
  double sums[2] = {0, 0};
  std::vector<int32_t> batch(size_t(s.micro) * (seq_length + 1));
  for (int64_t round = 0; round < s.rounds; ++round) {
    const int64_t first = s.begin + round * s.micro;
    const bool counted = first < s.end;
    const int n = counted ? int(std::min<int64_t>(s.micro, s.end - first)) : 1;
    for (int i = 0; i < n; ++i)
      stream.read_sample(uint64_t(counted ? first + i : 0), batch.data() + size_t(i) * (seq_length + 1));
    const MicroBatchLoss l = pipeline.forward(batch.data(), n);
    if (counted && counting) {
      sums[0] += l.ce_sum;
      sums[1] += double(l.tokens);
    }
  }
  topo.world().all_reduce_sum(sums, 2);
  return {sums[0], sums[1]};
}

template LossOverSamples loss_over_samples<float>(PipelineRunner<float>&, Topology&, const data::SampleStream&, int64_t,
                                                  int, int);
template LossOverSamples loss_over_samples<bf16>(PipelineRunner<bf16>&, Topology&, const data::SampleStream&, int64_t,
                                                 int, int);

}  // namespace mt
