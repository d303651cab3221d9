#include "planner/cost_model.h"

#include <fmt/format.h>

#include <algorithm>

#include "runtime/check.h"

namespace mt {

namespace {

// The message of an mt::Error without its "[rank R] file:line: " prefix.
std::string error_text(const Error& e) {
  const std::string what = e.what();
  const size_t close = what.find("] ");
  const size_t colon = close == std::string::npos ? std::string::npos : what.find(": ", close);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Where PP does not divide the layers: middle stages of ceil(L / PP) layers,
// the first and last sharing the rest. Sets the layout's first and last
// stage sizes; returns why the layers do not split, or "".
std::string uneven_stage_split(const ModelConfig& c, Layout& l) {
  l.first_stage_layers = l.last_stage_layers = 0;
  if (c.num_layers % l.pp == 0 || l.pp < 2) return "";
  const int middle = (c.num_layers + l.pp - 1) / l.pp;
  const int ends = c.num_layers - (l.pp - 2) * middle;
  if (ends < 2)
    return fmt::format("--num-layers {} does not split over {} stages ({} middle stages of {} layers leave {} "
                       "for the first and last)",
                       c.num_layers, l.pp, l.pp - 2, middle, ends);
  l.first_stage_layers = ends / 2;
  l.last_stage_layers = ends - ends / 2;
  return "";
}

// One layout under the cost model (never an assumed MFU), kept or dropped
// for memory.
SearchCandidate evaluate_layout(const PlanInputs& base, const Layout& l, const ParameterCounts& params,
                                const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans) {
  PlanInputs in = base;
  in.layout = l;
  in.mfu = 0;
  in.train_tokens = 0;  // no run length needed
  const PlanResult p = plan_with_counts(in, params, counts, spans);
  const RankMemory& big = p.ranks[size_t(p.largest_rank)];
  SearchCandidate cand;
  cand.layout = l;
  cand.memory = big.total();
  cand.step_s = p.timing->step_s;
  cand.tokens_per_s = p.timing->tokens_per_s;
  cand.mfu = p.timing->mfu;
  cand.bubble = p.bubble_fraction;
  if (!p.fits) {
    cand.drop = Drop::Memory;
    cand.dropped = fmt::format("needs {:.1f} GB on TP rank {} of stage {} (weights {:.1f}, gradients {:.1f}, "
                               "optimizer {:.1f}, activations {:.1f}, workspace {:.1f}){}, the GPU has {:.1f} GB",
                               big.total() / 1e9, big.tp, big.pp, big.weights / 1e9, big.gradients / 1e9,
                               big.optimizer / 1e9, big.activations / 1e9, big.workspace / 1e9,
                               std::string(l.seq_split() > 1 ? " with sequence parallelism" : "") +
                                   (l.grads_in_bf16 ? " and bf16 gradients" : ""),
                               p.memory_capacity / 1e9);
  }
  return cand;
}

// A layout of TP > 1 with sequence parallelism off and on (where TP divides
// the sequence): the faster of the two that fit, the one that fits, or when
// neither does the smaller (sequence parallelism never holds more: the
// residual stream's rows it splits outweigh the rows it gathers).
SearchCandidate evaluate_with_and_without_sp(const PlanInputs& base, Layout l, const ParameterCounts& params,
                                             const std::vector<RankCounts>& counts,
                                             const std::vector<StageSpan>& spans) {
  l.sequence_parallel = false;
  SearchCandidate off = evaluate_layout(base, l, params, counts, spans);
  if (l.tp == 1 || base.model.seq_length % l.tp != 0) return off;
  l.sequence_parallel = true;
  SearchCandidate on = evaluate_layout(base, l, params, counts, spans);
  const bool on_fits = on.drop == Drop::Kept, off_fits = off.drop == Drop::Kept;
  if (on_fits != off_fits) return on_fits ? on : off;
  if (!on_fits) return on.memory <= off.memory ? on : off;
  if (on.tokens_per_s != off.tokens_per_s) return on.tokens_per_s > off.tokens_per_s ? on : off;
  return on.memory <= off.memory ? on : off;
}

// A layout with float32 gradients and, under bf16 precision, with bf16
// ones (--grad-reduce-in-bf16), each with and without sequence
// parallelism: float32 gradients when they fit (they are the more
// accurate), else bf16 ones when those fit, else the smaller.
SearchCandidate evaluate_gradient_types(const PlanInputs& base, Layout l, const ParameterCounts& params,
                                        const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans) {
  l.grads_in_bf16 = false;
  SearchCandidate fp32 = evaluate_with_and_without_sp(base, l, params, counts, spans);
  if (fp32.drop == Drop::Kept || base.precision != Precision::BF16) return fp32;
  l.grads_in_bf16 = true;
  SearchCandidate bf16 = evaluate_with_and_without_sp(base, l, params, counts, spans);
  if (bf16.drop == Drop::Kept) return bf16;
  return bf16.memory < fp32.memory ? bf16 : fp32;
}

// The message of the error fn throws, or "" when it passes.
template <typename F>
std::string problem_of(F&& fn) {
  try {
    fn();
    return "";
  } catch (const Error& e) {
    return error_text(e);
  }
}

}  // namespace

SearchResult search_layouts(const PlanInputs& base, int max_tp, int max_micro_batch) {
  const ModelConfig& c = base.model;
  const int gpus = base.num_gpus();
  const ParameterCounts params = count_parameters(c);
  SearchResult out;
  auto keep_or_drop = [&](SearchCandidate cand) {
    (cand.drop == Drop::Kept ? out.kept : out.dropped).push_back(std::move(cand));
  };
  auto drop = [&](const Layout& l, Drop kind, std::string why) {
    keep_or_drop(SearchCandidate{.layout = l, .drop = kind, .dropped = std::move(why)});
  };
  for (int tp = 1; tp <= std::min(max_tp, gpus); ++tp) {
    if (gpus % tp != 0) continue;
    Layout l = base.layout;
    l.tp = tp;
    l.pp = 1;
    l.dp = gpus / tp;
    if (std::string why = problem_of([&] { for (int r = 0; r < tp; ++r) tp_shape(c, r, tp); }); !why.empty()) {
      drop(l, Drop::TensorParallel, why);
      continue;
    }
    for (int pp = 1; pp <= std::min(c.num_layers, gpus / tp); ++pp) {
      if ((gpus / tp) % pp != 0) continue;
      l.pp = pp;
      l.dp = gpus / (tp * pp);
      l.micro_batch = 1;
      l.recompute = Recompute::None;
      std::vector<StageSpan> spans;
      std::string why = uneven_stage_split(c, l);
      if (why.empty()) why = problem_of([&] { spans = stage_spans(c, l); });
      if (!why.empty()) {
        drop(l, Drop::StageSplit, why);
        continue;
      }
      if (base.global_batch % l.dp != 0) {
        drop(l, Drop::BatchSplit, fmt::format("--global-batch-size {} is not divisible by DP", base.global_batch));
        continue;
      }
      const int64_t per_replica = base.global_batch / l.dp;
      for (int ep = 1; ep <= (c.is_moe() ? l.dp : 1); ++ep) {
        if (l.dp % ep != 0 || c.num_experts % ep != 0) continue;
        l.ep = ep;
        const std::vector<RankCounts> counts = rank_counts(c, tp, spans, ep);
        for (int b = 1; b <= std::min<int64_t>(max_micro_batch, per_replica); ++b) {
          if (per_replica % b != 0) continue;
          l.micro_batch = b;
          if (std::string batch_why =
                  problem_of([&] { data::BatchSchedule(base.global_batch, b, l.dp, base.rampup); });
              !batch_why.empty()) {
            drop(l, Drop::BatchSplit, batch_why);
            continue;
          }
          for (Recompute rc : {Recompute::None, Recompute::Selective, Recompute::Full}) {
            l.recompute = rc;
            keep_or_drop(evaluate_gradient_types(base, l, params, counts, spans));
          }
        }
      }
      l.ep = 1;
    }
  }
  std::stable_sort(out.kept.begin(), out.kept.end(), [](const SearchCandidate& a, const SearchCandidate& b) {
    if (a.tokens_per_s != b.tokens_per_s) return a.tokens_per_s > b.tokens_per_s;
    return a.memory < b.memory;
  });
  return out;
}

}  // namespace mt
