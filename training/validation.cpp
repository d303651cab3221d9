#include "training/validation.h"

#include "runtime/check.h"
#include "training/loss_over_samples.h"

namespace mt {

ValidationSet::ValidationSet(const TrainOptions& o)
    : store_(o.valid_data_path),
      stream_(store_, o.model.seq_length, 0),
      count_(o.eval_iters * o.global_batch_size),
      seq_length_(o.model.seq_length),
      micro_batch_size_(o.micro_batch_size) {
  store_.check_token_range(o.model.vocab_size);
  MT_CHECK(uint64_t(count_) <= stream_.num_samples(),
           "--valid-data-path {} holds {} samples of {}+1 tokens, too few for --eval-iters {} x "
           "--global-batch-size {} = {}",
           o.valid_data_path, stream_.num_samples(), o.model.seq_length, o.eval_iters, o.global_batch_size, count_);
}

template <typename T>
double ValidationSet::loss(PipelineRunner<T>& pipeline, Topology& topo) const {
  return loss_over_samples(pipeline, topo, stream_, count_, seq_length_, micro_batch_size_).mean();
}

template double ValidationSet::loss<float>(PipelineRunner<float>&, Topology&) const;
template double ValidationSet::loss<bf16>(PipelineRunner<bf16>&, Topology&) const;

}  // namespace mt
