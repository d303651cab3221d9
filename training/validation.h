// --valid-data-path: the samples each validation evaluates, the first
// --eval-iters x --global-batch-size of the store in storage order, and
// their mean loss on the training layout (training/loss_over_samples.h).
#pragma once

#include <cstdint>

#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "parallel/pipeline_runner.h"
#include "parallel/topology.h"
#include "training/train_options.h"

namespace mt {

class ValidationSet {
 public:
  // Opens the store and checks it holds enough samples of the model's ids.
  explicit ValidationSet(const TrainOptions& o);
  int64_t samples() const { return count_; }
  // Collective over topo's world: the mean CE over the samples.
  template <typename T>
  double loss(PipelineRunner<T>& pipeline, Topology& topo) const;

 private:
  data::IndexedDataset store_;
  data::SampleStream stream_;
  int64_t count_;
  int seq_length_, micro_batch_size_;
};

}  // namespace mt
