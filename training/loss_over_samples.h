// The forward-only loss of a fixed run of samples, in storage order, on any
// layout: what `moetrain eval` reports and `train --valid-data-path`
// validates with. Each data-parallel replica takes a contiguous share of
// the samples and runs it through its TP x PP part of the model; the sums
// meet in one all-reduce over the world.
#pragma once

#include <cstdint>

#include "data/sample_stream.h"
#include "parallel/pipeline_runner.h"
#include "parallel/topology.h"

namespace mt {

// Samples [begin, end) of the first `samples` are this replica's; it runs
// `rounds` micro-batches of at most `micro`. Under expert parallelism every
// replica runs the longest share's rounds (the all-to-alls need every EP
// rank), repeating sample 0 uncounted once its own are done.
struct SampleShare {
  int64_t begin = 0, end = 0, rounds = 0;
  int micro = 1;
};
SampleShare replica_share(int64_t samples, const Topology& topo, int micro_batch_size);

struct LossOverSamples {
  double ce_sum = 0, tokens = 0;  // summed over every replica's share
  double mean() const { return ce_sum / tokens; }
};

// Collective over the world: the cross-entropy of the first `samples`
// samples of `stream` (each seq_length + 1 tokens), forward only through
// `pipeline`.
template <typename T>
LossOverSamples loss_over_samples(PipelineRunner<T>& pipeline, Topology& topo, const data::SampleStream& stream,
                                  int64_t samples, int seq_length, int micro_batch_size);

}  // namespace mt
