#include "model/transformer.h"

#include <fmt/format.h>

#include <numeric>

#include "parallel/tensor_parallel.h"
#include "runtime/check.h"
#include "runtime/philox.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {
std::string layer_name(int l, const char* tensor) {
  return fmt::format("layers/{}/{}", l, tensor);
}

// Checked before any buffer is sized from it.
const ModelConfig& validated(const ModelConfig& cfg) {
  cfg.validate();
  return cfg;
}

// The model as one rank of `cp` context-parallel ranks holds a sample: its
// S/CP rows (the buffers' and kernels' sequence).
ModelConfig rows_of_sample(ModelConfig cfg, const ProcessGroup& cp) {
  MT_CHECK(cp.size == 1 || cfg.seq_length % (2 * cp.size) == 0,
           "--context-parallel-size {} cuts each sequence into {} chunks: --seq-length {} does not divide by {}",
           cp.size, 2 * cp.size, cfg.seq_length, 2 * cp.size);
  MT_CHECK(cp.size == 1 || !cfg.is_moe(),
           "--context-parallel-size {} with a mixture of experts: routing's balancing statistics over the CP group "
           "are not built yet",
           cp.size);
  cfg.seq_length /= cp.size;
  return cfg;
}

// The MLPs' and experts' view of the model on a TP rank: its share of
// each hidden size.
ModelConfig share_of_ffn(ModelConfig cfg, const TpShape& tp) {
  cfg.ffn_hidden_size = tp.ffn;
  cfg.moe_ffn_hidden_size = tp.expert_ffn;
  cfg.shared_expert_size = tp.shared_ffn;
  return cfg;
}

MlpShape dense_shape(const ModelConfig& share) { return {share.hidden_size, share.ffn_hidden_size, share.swiglu}; }

// Which MLP kinds the layers [begin, end) have.
LayerMlps mlps_of(const ModelConfig& c, int begin, int end) {
  LayerMlps kinds;
  for (int l = begin; l < end; ++l) (c.is_moe_layer(l) ? kinds.moe : kinds.dense) = true;
  return kinds;
}
}  // namespace

template <typename T>
LayerActs<T>::LayerActs(Backend<T>& be, const ModelConfig& c, const TpShape& tp, int B, LayerMlps mlps,
                        LayerKeep keep, int ep, int seq_split) {
  // nr: the residual stream's rows on this rank.
  const size_t n = size_t(B) * c.seq_length, nr = n / size_t(seq_split), d = c.hidden_size, hd = c.head_dim();
  if (keep == LayerKeep::Nothing) return;
  x = DeviceBuffer<T>(be, nr * d);
  if (keep == LayerKeep::Input) return;
  a = DeviceBuffer<T>(be, nr * d);
  rstd_attn = DeviceBuffer<Acc>(be.acc(), nr);
  q = DeviceBuffer<T>(be, n * tp.heads * hd);
  k = DeviceBuffer<T>(be, n * tp.kv_heads * hd);
  v = DeviceBuffer<T>(be, n * tp.kv_heads * hd);
  if (c.qk_layernorm) {
    q_pre = DeviceBuffer<T>(be, n * tp.heads * hd);
    k_pre = DeviceBuffer<T>(be, n * tp.kv_heads * hd);
    rstd_q = DeviceBuffer<Acc>(be.acc(), n * tp.heads);
    rstd_k = DeviceBuffer<Acc>(be.acc(), n * tp.kv_heads);
  }
  if (keep == LayerKeep::Everything) {
    lse = DeviceBuffer<Acc>(be.acc(), n * tp.heads);
    o = DeviceBuffer<T>(be, n * tp.heads * hd);
  }
  h = DeviceBuffer<T>(be, nr * d);
  m = DeviceBuffer<T>(be, nr * d);
  rstd_mlp = DeviceBuffer<Acc>(be.acc(), nr);
  const ModelConfig share = share_of_ffn(c, tp);
  if (mlps.moe) moe = MoeActs<T>(be, share, int(n), ep);
  if (mlps.dense) mlp = MlpActs<T>(be, dense_shape(share), n);
}

template <typename T>
Activations<T>::Activations(Backend<T>& be, const ModelConfig& c, const TpShape& tp,
                            const StageSpan& stage, int B, const std::vector<LayerKeep>& keep, int ep,
                            int seq_split)
    : batch(B) {
  const size_t n = size_t(B) * c.seq_length, nr = n / size_t(seq_split), d = c.hidden_size;
  inputs = DeviceBuffer<T, int32_t>(be, n);
  targets = DeviceBuffer<T, int32_t>(be, n);
  if (c.has_documents()) doc_start = DeviceBuffer<T, int32_t>(be, n);
  for (int l = stage.begin; l < stage.end_of(c); ++l)
    layers.emplace_back(be, c, tp, B, mlps_of(c, l, l + 1), keep.at(l - stage.begin), ep, seq_split);
  out = DeviceBuffer<T>(be, nr * d);
  if (!stage.last) return;
  hf = DeviceBuffer<T>(be, nr * d);
  rstd_final = DeviceBuffer<Acc>(be.acc(), nr);
  logits = DeviceBuffer<Acc>(be.acc(), n * tp.vocab);
  losses = DeviceBuffer<Acc>(be.acc(), n);
  ce_stats = DeviceBuffer<Acc>(be.acc(), 3 * n);
}

template <typename T>
Transformer<T>::Transformer(Backend<T>& be, const ModelConfig& cfg, int micro_batch,
                            const ProcessGroup& tp, const StageSpan& stage, int data_parallel,
                            const RecomputeConfig& recompute, const ProcessGroup& ep,
                            const TransformerOptions& options)
    : be_(be), cfg_(validated(cfg)), rows_(rows_of_sample(cfg_, options.cp)), tp_(tp),
      seq_split_(options.sequence_parallel ? tp.size : 1),
      tps_(tp_shape(cfg_, tp.rank, tp.size)), stage_(stage),
      num_layers_(stage.end_of(cfg_) - stage.begin), ffn_cfg_(share_of_ffn(cfg_, tps_)), max_batch_(micro_batch),
      params_(be, cfg_, tp, stage, data_parallel, ep.rank, ep.size, options.grads_in_t), ep_(ep),
      moe_(be, ffn_cfg_, tp, ep, micro_batch * rows_.seq_length,
           mlps_of(cfg_, stage.begin, stage.end_of(cfg_)).moe) {
  MT_CHECK(num_layers_ >= 1, "pipeline stage [{}, {}) holds no layers", stage.begin, stage.end_of(cfg_));
  MT_CHECK(rows_.seq_length % seq_split_ == 0,
           "--sequence-parallel splits each sequence over the {} TP ranks; --seq-length {} does not divide by {}",
           seq_split_, cfg_.seq_length, seq_split_ * (cfg_.seq_length / rows_.seq_length));
  if (seq_split_ > 1) mark_sequence_parallel_grads(params_.tensors);
  const size_t n = size_t(micro_batch) * rows_.seq_length, d = cfg.hidden_size;
  const size_t qd = size_t(tps_.heads) * cfg.head_dim(), kd = size_t(tps_.kv_heads) * cfg.head_dim();
  for (int l = stage.begin; l < stage.end_of(cfg_); ++l) {
    weights_.push_back(layer_tensors(l, params_.values.data(), false));
    grads_.push_back(layer_tensors(l, params_.grads.data(), true));
    // The layer's tensors are consecutive in each region.
    std::vector<size_t> first(params_.regions.size(), SIZE_MAX);
    for (const ParamTensor& t : params_.tensors)
      if (t.name.rfind(fmt::format("layers/{}/", l), 0) == 0)
        for (size_t r = 0; r < first.size(); ++r)
          if (t.offset >= params_.regions[r].begin && t.offset < params_.regions[r].end)
            first[r] = std::min(first[r], t.offset);
    std::erase(first, SIZE_MAX);
    layer_offsets_.push_back(first);
  }
  const LayerMlps stage_mlps = mlps_of(cfg_, stage.begin, stage.end_of(cfg_));
  if (stage_mlps.dense) mlp_scratch_ = MlpScratch<T>(be, dense_shape(ffn_cfg_), n);
  expert_load_ = ExpertLoad::zeros(cfg_.is_moe() ? size_t(num_layers_) : 0, cfg_.num_experts);
  router_state_.resize(size_t(num_layers_));
  for (int l = 0; l < num_layers_; ++l) {
    if (!cfg_.is_moe_layer(stage.begin + l)) continue;
    RouterState& r = router_state_[size_t(l)];
    const size_t E = size_t(cfg_.num_experts);
    r.kept.assign(E, 0);
    r.choices.assign(E, 0);
    if (cfg_.expert_bias) r.expert_bias.assign(E, 0.0f);
  }
  recompute_groups_ = recompute_groups(recompute, num_layers_);
  int rebuilt_layers = 0;
  for (const RecomputeGroup& g : recompute_groups_) {
    if (g.recomputed) rebuilt_layers = std::max(rebuilt_layers, g.size());
    const int l = int(slot_keep_.size());
    slot_keep_.push_back(g.recomputed ? (l == g.begin ? LayerKeep::Input : LayerKeep::Nothing)
                         : recompute.granularity == RecomputeGranularity::Selective ? LayerKeep::AllButAttentionCore
                                                                                    : LayerKeep::Everything);
  }
  // A rebuilt group may be of either kind of layer.
  for (int l = 0; l < rebuilt_layers; ++l)
    rebuilt_.emplace_back(be, rows_, tps_, micro_batch, stage_mlps, LayerKeep::Everything, ep.size, seq_split_);
  if (rebuilt_layers > 0) rebuilt_out_ = DeviceBuffer<T>(be, n / seq_split_ * d);
  if (recompute.granularity == RecomputeGranularity::Selective) {
    core_o_ = DeviceBuffer<T>(be, n * qd);
    core_lse_ = DeviceBuffer<Acc>(be.acc(), n * tps_.heads);
  }
  cp_ = options.cp;
  if (cp_.size > 1) {
    cp_positions_ = cp_chunk_positions(cp_.rank, cp_.size, cfg_.seq_length);
    ring_ = std::make_unique<RingAttention<T>>(be, cp_, attention_shape(micro_batch, nullptr));
  }
  const int64_t before_slot = device_buffer_bytes;
  slot(0, micro_batch);
  activation_bytes_ = device_buffer_bytes - before_slot;
  ffn_out_ = DeviceBuffer<T>(be, n * d);
  dres_ = DeviceBuffer<T>(be, n * d);
  dh_ = DeviceBuffer<T>(be, n * d);
  da_ = DeviceBuffer<T>(be, n * d);
  dq_ = DeviceBuffer<T>(be, n * qd);
  dk_ = DeviceBuffer<T>(be, n * kd);
  if (cfg_.qk_layernorm) {
    dq_pre_ = DeviceBuffer<T>(be, n * qd);
    dk_pre_ = DeviceBuffer<T>(be, n * kd);
  }
  dv_ = DeviceBuffer<T>(be, n * kd);
  do_ = DeviceBuffer<T>(be, n * qd);
  dm_ = DeviceBuffer<T>(be, n * d);
  if (stage.last) dlogits_ = DeviceBuffer<T>(be, n * tps_.vocab);
  dhf_ = DeviceBuffer<T>(be, n * d);
  if (seq_split_ > 1) {
    gathered_ = DeviceBuffer<T>(be, n * d);
    gathered_grad_ = DeviceBuffer<T>(be, n * d);
    dlocal_ = DeviceBuffer<T>(be, n / seq_split_ * d);
  }
  const int64_t parameter_bytes = int64_t(params_.values.size() * sizeof(T) + params_.grads.size() * sizeof(Acc) +
                                          params_.grads_in_t.size() * sizeof(T));
  workspace_bytes_ = device_buffer_bytes - bytes_before_ - parameter_bytes - activation_bytes_;
}

template <typename T>
const T* Transformer<T>::whole_rows(const T* local, DeviceBuffer<T>& whole, int n) {
  return gather_rows(be_, tp_, seq_split_ > 1, local, whole.data(), size_t(n), size_t(cfg_.hidden_size));
}

template <typename T>
void Transformer<T>::reduce_rows(T* partial, T* local, int n) {
  reduce_scatter_rows(tp_, seq_split_ > 1, partial, local, size_t(n), size_t(cfg_.hidden_size));
}

template <typename T>
template <typename W>
LayerWeights<W> Transformer<T>::layer_tensors(int l, W* flat, bool gradients) const {
  auto get = [&](const char* t) {
    const ParamTensor& p = params_.find(layer_name(l, t));
    return flat + (gradients ? p.grad_offset : p.offset);
  };
  LayerWeights<W> w{get("attn_norm"), get("wq"), get("wk"), get("wv"), nullptr, nullptr, get("wo"), get("mlp_norm"),
                    {}, {}};
  if (cfg_.qk_layernorm) {
    w.q_norm = get("q_norm");
    w.k_norm = get("k_norm");
  }
  // SwiGLU's up projections and the shared expert's gate, when there.
  auto get_if = [&](bool there, const char* t) { return there ? get(t) : nullptr; };
  const bool swiglu = cfg_.swiglu, shared = cfg_.shared_expert_size > 0;
  if (cfg_.is_moe_layer(l)) {
    w.moe.router = get("router");
    w.moe.experts = {get("experts/w1"), get_if(swiglu, "experts/w3"), get("experts/w2")};
    if (shared)
      w.moe.shared = {get("shared_expert/w1"), get_if(swiglu, "shared_expert/w3"), get("shared_expert/w2")};
    w.moe.shared_gate = get_if(cfg_.shared_expert_gate, "shared_expert/gate");
  } else {
    w.mlp = {get("mlp/w1"), get_if(swiglu, "mlp/w3"), get("mlp/w2")};
  }
  return w;
}

template <typename T>
void Transformer<T>::count_expert_load(const Routing& r, const std::vector<int32_t>& inputs, int l) {
  const size_t E = size_t(r.experts);
  int64_t* routed = expert_load_.routed.data() + l * E;
  int64_t* dropped = expert_load_.dropped.data() + l * E;
  for (size_t slot = 0; slot < r.expert.size(); ++slot) {
    const int e = r.expert[slot];
    if (!r.kept[slot]) {
      dropped[e] += 1;
      continue;
    }
    routed[e] += 1;
    const size_t t = slot / size_t(r.topk);
    const uint64_t key = (uint64_t(e) << 48) ^ (uint64_t(t % size_t(cfg_.seq_length)) << 32) ^ uint32_t(inputs[t]);
    expert_load_.hash[l] += int64_t(philox_words(0, 0, key)[0] >> 1);
  }
}

template <typename T>
ExpertLoad Transformer<T>::model_expert_load(Communicator* group) const {
  const size_t E = size_t(cfg_.num_experts);
  ExpertLoad all = ExpertLoad::zeros(cfg_.is_moe() ? size_t(cfg_.num_layers) : 0, cfg_.num_experts);
  if (all.hash.empty()) return all;
  if (tp_.rank == 0) {
    std::copy(expert_load_.routed.begin(), expert_load_.routed.end(), all.routed.begin() + stage_.begin * E);
    std::copy(expert_load_.dropped.begin(), expert_load_.dropped.end(), all.dropped.begin() + stage_.begin * E);
    std::copy(expert_load_.hash.begin(), expert_load_.hash.end(), all.hash.begin() + stage_.begin);
  }
  // The bias as a sum over its holders and their count: n equal floats sum
  // exactly in double, so the quotient is the bias itself.
  std::vector<double> bias_sum, holders;
  if (cfg_.expert_bias) {
    bias_sum.assign(all.routed.size(), 0.0);
    holders.assign(all.hash.size(), 0.0);
    for (int l = 0; l < num_layers_ && tp_.rank == 0; ++l) {
      const std::vector<float>& b = router_state_[size_t(l)].expert_bias;
      std::copy(b.begin(), b.end(), bias_sum.begin() + (stage_.begin + l) * E);
      holders[size_t(stage_.begin + l)] = b.empty() ? 0.0 : 1.0;
    }
  }
  if (group) {
    group->all_reduce_sum(all.routed.data(), all.routed.size());
    group->all_reduce_sum(all.dropped.data(), all.dropped.size());
    group->all_reduce_sum(all.hash.data(), all.hash.size());
    if (cfg_.expert_bias) {
      group->all_reduce_sum(bias_sum.data(), bias_sum.size());
      group->all_reduce_sum(holders.data(), holders.size());
    }
  }
  for (size_t i = 0; i < bias_sum.size(); ++i)
    all.bias.push_back(holders[i / E] > 0 ? float(bias_sum[i] / holders[i / E]) : 0.0f);
  return all;
}

template <typename T>
RouterLosses Transformer<T>::layer_forward(const Activations<T>& slot, LayerActs<T>& a, const T* x, int l, T* out,
                                     bool rebuilding, const Decoding* decoding) {
  const ModelConfig& c = cfg_;
  const LayerWeights<T>& w = weights_[l];
  // H, G: this rank's query and kv heads (all of them on one rank); nr:
  // the residual stream's rows on this rank.
  const int n = decoding ? decoding->rows.size() : slot.batch * rows_.seq_length, nr = n / seq_split_,
            d = c.hidden_size, H = tps_.heads, G = tps_.kv_heads, hd = c.head_dim();
  const double eps = c.norm_eps;

  // Attention block: h = x + attention(rope(q), rope(k), v) wo^T. wq (and
  // wk, wv when G >= TP) are column-parallel, wo row-parallel: one
  // all-reduce of the projection, or under sequence parallelism an
  // all-gather of attn_norm's rows before the products and a
  // reduce-scatter after.
  be_.rmsnorm_forward(a.a.data(), a.rstd_attn.data(), x, w.attn_norm, nr, d, eps);
  const T* an = whole_rows(a.a.data(), gathered_, n);
  // --qk-layernorm: the projections land before each head's RMSNorm.
  T* q = c.qk_layernorm ? a.q_pre.data() : a.q.data();
  T* k = c.qk_layernorm ? a.k_pre.data() : a.k.data();
  be_.gemm(Trans::N, Trans::T, n, H * hd, d, T(1), an, d, w.wq, d, T(0), q, H * hd);
  be_.gemm(Trans::N, Trans::T, n, G * hd, d, T(1), an, d, w.wk, d, T(0), k, G * hd);
  be_.gemm(Trans::N, Trans::T, n, G * hd, d, T(1), an, d, w.wv, d, T(0), a.v.data(), G * hd);
  if (c.qk_layernorm) {
    be_.rmsnorm_forward(a.q.data(), a.rstd_q.data(), q, w.q_norm, n * H, hd, eps);
    be_.rmsnorm_forward(a.k.data(), a.rstd_k.data(), k, w.k_norm, n * G, hd, eps);
  }
  // Selective recompute keeps the attention core's output only until wo has used it.
  T* o = a.o.size() ? a.o.data() : core_o_.data();
  Acc* lse = a.lse.size() ? a.lse.data() : core_lse_.data();
  attention_core(slot, a, l, o, lse, decoding);
  T* projected = seq_split_ > 1 ? ffn_out_.data() : a.h.data();  // [n, d] partial over TP
  be_.gemm(Trans::N, Trans::T, n, d, H * hd, T(1), o, H * hd, w.wo, H * hd, T(0), projected, d);
  reduce_rows(projected, a.h.data(), n);
  be_.axpy(size_t(nr) * d, T(1), x, a.h.data());

  // MLP block: out = h + mlp(mlp_norm(h)), the MLP dense or of experts,
  // its output partial over TP and reduced as the attention's. Under
  // sequence parallelism the router reads the gathered rows as the
  // experts do, so every TP rank routes the whole micro-batch alike.
  be_.rmsnorm_forward(a.m.data(), a.rstd_mlp.data(), a.h.data(), w.mlp_norm, nr, d, eps);
  const T* m = whole_rows(a.m.data(), gathered_, n);
  RouterLosses router;
  if (c.is_moe_layer(stage_.begin + l)) {
    // Generation's tokens count against their own sequence's capacity.
    const SequenceCapacity capacity = decoding ? decoding->cache.capacity_of(l, decoding->rows) : SequenceCapacity{};
    router = moe_.forward(w.moe, router_state_[size_t(l)], a.moe, m, ffn_out_.data(), n,
                          decoding ? &capacity : nullptr);
    if (!rebuilding && !decoding) {
      count_expert_load(a.moe.router.routing, slot.host_inputs, l);
      router_state_[size_t(l)].count(a.moe.router.routing);
    }
  } else {
    mlp_forward(be_, dense_shape(ffn_cfg_), w.mlp, a.mlp, m, ffn_out_.data(), n);
  }
  T* ffn = seq_split_ > 1 ? out : ffn_out_.data();
  reduce_rows(ffn_out_.data(), ffn, n);
  if (ffn != out) be_.copy(out, ffn, size_t(nr) * d);
  be_.axpy(size_t(nr) * d, T(1), a.h.data(), out);
  return router;
}

template <typename T>
void Transformer<T>::attention_core(const Activations<T>& slot, LayerActs<T>& a, int l, T* o, Acc* lse,
                                    const Decoding* decoding) {
  const int H = tps_.heads, G = tps_.kv_heads;
  if (!decoding) {
    be_.rope_forward(a.q.data(), rope_shape(slot, H));
    be_.rope_forward(a.k.data(), rope_shape(slot, G));
    attend(o, lse, a, slot);
    return;
  }
  // Each row at its own position; a sequence is one document.
  const int n = decoding->rows.size();
  KvCache<T>& cache = decoding->cache;
  const int32_t *seq = cache.row_sequence.data(), *pos = cache.row_position.data();
  RopeShape rope{n, 1, H, cfg_.head_dim(), cfg_.rope_theta, cfg_.rope_interpolation, nullptr, pos, cfg_.seq_length};
  be_.rope_forward(a.q.data(), rope);
  rope.heads = G;
  be_.rope_forward(a.k.data(), rope);
  be_.kv_cache_store(cache.k[size_t(l)].data(), a.k.data(), seq, pos, n, cache.shape);
  be_.kv_cache_store(cache.v[size_t(l)].data(), a.v.data(), seq, pos, n, cache.shape);
  be_.attention_decode(o, a.q.data(), cache.k[size_t(l)].data(), cache.v[size_t(l)].data(), seq, pos, n,
                       attention_shape(slot), cache.shape);
}

template <typename T>
void Transformer<T>::attend(T* o, Acc* lse, const LayerActs<T>& a, const Activations<T>& slot) {
  if (ring_)
    ring_->forward(o, lse, a.q.data(), a.k.data(), a.v.data(), attention_shape(slot));
  else
    be_.attention_forward(o, lse, a.q.data(), a.k.data(), a.v.data(), attention_shape(slot));
}

template <typename T>
AttentionShape Transformer<T>::attention_shape(const Activations<T>& slot) const {
  return attention_shape(slot.batch, cfg_.reset_attention_mask ? slot.doc_start.data() : nullptr);
}

template <typename T>
AttentionShape Transformer<T>::attention_shape(int batch, const int32_t* doc_start) const {
  AttentionShape s;
  s.batch = batch;
  s.seq = rows_.seq_length;
  s.heads = tps_.heads;
  s.kv_heads = tps_.kv_heads;
  s.head_dim = cfg_.head_dim();
  s.first_head = tps_.first_head;
  s.first_kv_head = tps_.first_kv_head;
  s.heads_per_kv = cfg_.num_heads / cfg_.num_query_groups;
  s.doc_start = doc_start;
  return s;
}

template <typename T>
RopeShape Transformer<T>::rope_shape(const Activations<T>& slot, int heads) const {
  // Context parallelism: each row at its position in the whole sample.
  if (cp_.size > 1)
    return {slot.batch * rows_.seq_length, 1, heads, cfg_.head_dim(), cfg_.rope_theta, cfg_.rope_interpolation,
            nullptr, slot.rope_position.data(), cfg_.seq_length};
  return {slot.batch, cfg_.seq_length, heads, cfg_.head_dim(), cfg_.rope_theta, cfg_.rope_interpolation,
          cfg_.reset_position_ids ? slot.doc_start.data() : nullptr};
}

template <typename T>
void Transformer<T>::layer_backward(const Activations<T>& slot, LayerActs<T>& a, const T* x, int l, T* dx,
                                    double aux_scale) {
  const ModelConfig& c = cfg_;
  const LayerWeights<T>& w = weights_[l];
  const LayerWeights<Acc>& g = grads_[l];
  const int B = slot.batch, S = rows_.seq_length, n = B * S, nr = n / seq_split_, d = c.hidden_size,
            H = tps_.heads, G = tps_.kv_heads, hd = c.head_dim();
  // Under sequence parallelism: the input gradient of a TP-split product
  // reduce-scattered into dlocal_, else all-reduced in place.
  T* const reduced = seq_split_ > 1 ? dlocal_.data() : nullptr;

  // MLP block: dh = dout + mlp_norm'(mlp'(dout)); mlp' is summed over TP
  // (sequence parallelism gathers dout and the MLP's input first).
  be_.copy(dh_.data(), dx, size_t(nr) * d);
  const T* dout = whole_rows(dx, gathered_grad_, n);
  const T* m = whole_rows(a.m.data(), gathered_, n);
  if (c.is_moe_layer(stage_.begin + l))
    moe_.backward(w.moe, g.moe, a.moe, m, dout, dm_.data(), n, aux_scale);
  else
    mlp_backward(be_, dense_shape(ffn_cfg_), w.mlp, g.mlp, a.mlp, mlp_scratch_, m, dout, dm_.data(), n);
  T* dm = reduced ? reduced : dm_.data();
  reduce_rows(dm_.data(), dm, n);
  be_.rmsnorm_backward(dh_.data(), g.mlp_norm, dm, a.h.data(), w.mlp_norm, a.rstd_mlp.data(), nr, d);

  // Attention block: dx = dh + attn_norm'(q', k', v' of attention'(dh wo)).
  // The input gradient of the column-parallel q, k, v is summed over TP.
  // Selective recompute: the attention core again, from the kept q, k, v.
  const T* o = a.o.data();
  const Acc* lse = a.lse.data();
  if (!a.o.size()) {
    attend(core_o_.data(), core_lse_.data(), a, slot);
    o = core_o_.data();
    lse = core_lse_.data();
  }
  const T* dh = whole_rows(dh_.data(), gathered_grad_, n);
  be_.gemm_acc(Trans::T, Trans::N, d, H * hd, n, Acc(1), dh, d, o, H * hd, Acc(1), g.wo, H * hd);
  be_.gemm(Trans::N, Trans::N, n, H * hd, d, T(1), dh, d, w.wo, H * hd, T(0), do_.data(), H * hd);
  be_.fill(dq_.data(), T(0), size_t(n) * H * hd);
  be_.fill(dk_.data(), T(0), size_t(n) * G * hd);
  be_.fill(dv_.data(), T(0), size_t(n) * G * hd);
  if (ring_)
    ring_->backward(dq_.data(), dk_.data(), dv_.data(), do_.data(), o, lse, a.q.data(), a.k.data(), a.v.data(),
                    attention_shape(slot));
  else
    be_.attention_backward(dq_.data(), dk_.data(), dv_.data(), do_.data(), o, lse, a.q.data(), a.k.data(),
                           a.v.data(), attention_shape(slot));
  be_.rope_backward(dq_.data(), rope_shape(slot, H));
  be_.rope_backward(dk_.data(), rope_shape(slot, G));
  // dq, dk: of the projections' outputs, through the heads' RMSNorm when
  // --qk-layernorm.
  const T* dq = dq_.data();
  const T* dk = dk_.data();
  if (c.qk_layernorm) {
    be_.fill(dq_pre_.data(), T(0), size_t(n) * H * hd);
    be_.fill(dk_pre_.data(), T(0), size_t(n) * G * hd);
    be_.rmsnorm_backward(dq_pre_.data(), g.q_norm, dq, a.q_pre.data(), w.q_norm, a.rstd_q.data(), n * H, hd);
    be_.rmsnorm_backward(dk_pre_.data(), g.k_norm, dk, a.k_pre.data(), w.k_norm, a.rstd_k.data(), n * G, hd);
    dq = dq_pre_.data();
    dk = dk_pre_.data();
  }
  const T* an = whole_rows(a.a.data(), gathered_, n);
  be_.gemm_acc(Trans::T, Trans::N, H * hd, d, n, Acc(1), dq, H * hd, an, d, Acc(1), g.wq, d);
  be_.gemm_acc(Trans::T, Trans::N, G * hd, d, n, Acc(1), dk, G * hd, an, d, Acc(1), g.wk, d);
  be_.gemm_acc(Trans::T, Trans::N, G * hd, d, n, Acc(1), dv_.data(), G * hd, an, d, Acc(1), g.wv, d);
  be_.gemm(Trans::N, Trans::N, n, d, H * hd, T(1), dq, H * hd, w.wq, d, T(0), da_.data(), d);
  be_.gemm(Trans::N, Trans::N, n, d, G * hd, T(1), dk, G * hd, w.wk, d, T(1), da_.data(), d);
  be_.gemm(Trans::N, Trans::N, n, d, G * hd, T(1), dv_.data(), G * hd, w.wv, d, T(1), da_.data(), d);
  T* da = reduced ? reduced : da_.data();
  reduce_rows(da_.data(), da, n);
  be_.copy(dx, dh_.data(), size_t(nr) * d);
  be_.rmsnorm_backward(dx, g.attn_norm, da, x, w.attn_norm, a.rstd_attn.data(), nr, d);
}

template <typename T>
void Transformer<T>::start_step() {
  for (RouterState& r : router_state_) r.clear_counts();
}

template <typename T>
void Transformer<T>::update_router_state(const ProcessGroup& dp) {
  std::vector<int64_t> counts;  // [moe layers][kept E, choices E]
  for (const RouterState& r : router_state_) {
    counts.insert(counts.end(), r.kept.begin(), r.kept.end());
    counts.insert(counts.end(), r.choices.begin(), r.choices.end());
  }
  if (counts.empty()) return;
  dp.all_reduce_sum(counts.data(), counts.size());
  const size_t E = size_t(cfg_.num_experts);
  const int64_t* at = counts.data();
  for (RouterState& r : router_state_) {
    if (r.kept.empty()) continue;
    const int64_t* kept = at;
    const int64_t* choices = at + E;
    at += 2 * E;
    if (!r.expert_bias.empty()) {
      const double mean = double(std::accumulate(kept, kept + E, int64_t(0))) / double(E);
      for (size_t e = 0; e < E; ++e) {
        const double offset = mean - double(kept[e]);
        r.expert_bias[e] += float((offset > 0) - (offset < 0)) * float(cfg_.expert_bias_update_rate);
      }
    }
    if (cfg_.load_balancing_type == "global_aux_loss") {
      const double total = double(std::accumulate(choices, choices + E, int64_t(0)));
      r.global_share.resize(E);
      for (size_t e = 0; e < E; ++e) r.global_share[e] = float(double(choices[e]) / total);
    }
    r.clear_counts();
  }
}

template <typename T>
void Transformer<T>::reduce_partial_grads() {
  for (const ParamTensor& t : params_.tensors) {
    if (!t.partial_grad) continue;
    if (params_.has_grads_in_t())
      tp_.all_reduce_sum(params_.grads_in_t.data() + t.offset, t.numel);
    else
      tp_.all_reduce_sum(params_.grads.data() + t.offset, t.numel);
  }
}

template <typename T>
void Transformer<T>::add_unit_gradients(const std::string& unit) {
  if (params_.has_grads_in_t()) params_.add_unit_gradients(be_, params_.unit(unit));
}

template <typename T>
Activations<T>& Transformer<T>::slot(int s, int B) {
  MT_CHECK(B >= 1 && B <= max_batch_, "micro-batch of {} samples, the model was built for at most {}",
           B, max_batch_);
  MT_CHECK(s >= 0 && s <= int(slots_.size()), "activation slot {} requested with {} in use", s, slots_.size());
  if (s == int(slots_.size())) {
    slots_.push_back(
        std::make_unique<Activations<T>>(be_, rows_, tps_, stage_, max_batch_, slot_keep_, ep_.size, seq_split_));
    if (cp_.size > 1)
      slots_.back()->rope_position = DeviceBuffer<T, int32_t>(be_, size_t(max_batch_) * rows_.seq_length);
  }
  slots_[s]->batch = B;
  return *slots_[s];
}

template <typename T>
T* Transformer<T>::layer_input(Activations<T>& slot, int l) {
  const RecomputeGroup& g = recompute_groups_[l];
  return g.recomputed && l != g.begin ? rebuilt_[l - g.begin].x.data() : slot.layers[l].x.data();
}

template <typename T>
LayerActs<T>& Transformer<T>::layer_acts(Activations<T>& slot, int l) {
  const RecomputeGroup& g = recompute_groups_[l];
  return g.recomputed ? rebuilt_[l - g.begin] : slot.layers[l];
}

template <typename T>
void Transformer<T>::rebuild(Activations<T>& slot, const RecomputeGroup& g) {
  for (int l = g.begin; l < g.end; ++l) {
    T* out = l + 1 < g.end ? layer_input(slot, l + 1) : rebuilt_out_.data();
    layer_forward(slot, layer_acts(slot, l), layer_input(slot, l), l, out, true);
  }
}

template <typename T>
T* Transformer<T>::stage_input(int s) {
  return slot(s, max_batch_).layers[0].x.data();
}

template <typename T>
const T* Transformer<T>::stage_output(int s) {
  return slots_.at(s)->out.data();
}

template <typename T>
MicroBatchLoss Transformer<T>::forward_stage(int s, const int32_t* tokens, int B) {
  const ModelConfig& c = cfg_;
  Activations<T>& a = slot(s, B);
  // V: this rank's slice of the vocabulary.
  // R: a sample's rows on this rank, all S or its context-parallel chunks.
  const int S = c.seq_length, R = rows_.seq_length, n = B * R, V = tps_.vocab;

  // Inputs are the first S tokens of each sample, targets the last S; row i
  // of a sample is its token at position(i).
  auto position = [&](int i) { return cp_.size > 1 ? cp_positions_[size_t(i)] : i; };
  std::vector<int32_t> inputs(n), targets(n), doc_start(c.has_documents() ? n : 0), rope(cp_.size > 1 ? n : 0);
  std::vector<int32_t> first(S, 0);  // where the document of each position begins
  for (int b = 0; b < B; ++b) {
    const int32_t* sample = tokens + size_t(b) * (S + 1);
    // A document ends with its end-of-document token; the next begins after it.
    for (int t = 1; t < S && c.has_documents(); ++t) first[t] = sample[t - 1] == c.eod_token ? t : first[t - 1];
    for (int i = 0; i < R; ++i) {
      const size_t row = size_t(b) * R + i;
      const int p = position(i);
      inputs[row] = sample[p];
      targets[row] = sample[p + 1];
      if (c.has_documents()) doc_start[row] = first[p];
      if (cp_.size > 1) rope[row] = p - (c.reset_position_ids ? first[p] : 0);
    }
  }
  be_.int_from_host(a.inputs.data(), inputs.data(), n);
  if (c.has_documents()) be_.int_from_host(a.doc_start.data(), doc_start.data(), n);
  if (cp_.size > 1) be_.int_from_host(a.rope_position.data(), rope.data(), n);
  a.host_inputs = inputs;
  be_.int_from_host(a.targets.data(), targets.data(), n);

  MicroBatchLoss loss;
  loss.tokens = n;
  if (stage_.first) embed(a, n);
  for (int l = 0; l < num_layers_; ++l) {
    mark_progress();
    T* out = l + 1 < num_layers_ ? layer_input(a, l + 1) : a.out.data();
    const RouterLosses router = layer_forward(a, layer_acts(a, l), layer_input(a, l), l, out, false);
    loss.aux += router.aux;
    loss.z += router.z;
  }
  if (!stage_.last) return loss;

  // Vocab-parallel LM head and cross-entropy: logits stay split over TP.
  vocabulary_logits(a, n);
  vocab_parallel_cross_entropy(be_, tp_, a.losses.data(), a.logits.data(), a.targets.data(), n, V,
                               tps_.vocab_start, a.ce_stats.data());
  std::vector<Acc> losses(n);
  be_.acc().to_host(losses.data(), a.losses.data(), n);
  loss.ce_sum = std::accumulate(losses.begin(), losses.end(), 0.0);
  return loss;
}

template <typename T>
void Transformer<T>::backward_stage(int s, const T* grad_output, double ce_scale, double aux_scale,
                                    const GradsReady* ready) {
  const ModelConfig& c = cfg_;
  Activations<T>& a = *slots_.at(s);
  const int n = a.batch * rows_.seq_length, nr = n / seq_split_, d = c.hidden_size, V = tps_.vocab;
  if (stage_.last) {
    vocab_parallel_cross_entropy_grad(be_, dlogits_.data(), a.logits.data(), a.targets.data(), n, V,
                                      tps_.vocab_start, ce_scale, a.ce_stats.data());
    const T* hf = whole_rows(a.hf.data(), gathered_, n);
    be_.gemm_acc(Trans::T, Trans::N, V, d, n, Acc(1), dlogits_.data(), V, hf, d, Acc(1), params_.grad("lm_head"), d);
    be_.gemm(Trans::N, Trans::N, n, d, V, T(1), dlogits_.data(), V, params_.value("lm_head"), d, T(0), dhf_.data(), d);
    T* dhf = seq_split_ > 1 ? dlocal_.data() : dhf_.data();
    reduce_rows(dhf_.data(), dhf, n);
    be_.fill(dres_.data(), T(0), size_t(nr) * d);
    be_.rmsnorm_backward(dres_.data(), params_.grad("final_norm"), dhf, a.out.data(), params_.value("final_norm"),
                         a.rstd_final.data(), nr, d);
    add_unit_gradients("head");
    if (ready) (*ready)(params_.find("final_norm").offset);
  } else {
    MT_CHECK(grad_output != nullptr, "stage [{}, {}) needs the gradient of its output", stage_.begin, stage_.end_of(c));
    be_.copy(dres_.data(), grad_output, size_t(nr) * d);
  }
  for (int l = num_layers_ - 1; l >= 0; --l) {
    mark_progress();
    const RecomputeGroup& group = recompute_groups_[l];
    if (group.recomputed && l == group.end - 1) rebuild(a, group);
    layer_backward(a, layer_acts(a, l), layer_input(a, l), l, dres_.data(), aux_scale);
    add_unit_gradients(fmt::format("layers/{}", stage_.begin + l));
    if (ready)
      for (size_t from : layer_offsets_[l]) (*ready)(from);
  }
  if (stage_.first) {
    const T* dres = whole_rows(dres_.data(), gathered_grad_, n);
    be_.embedding_backward(params_.grad("embed"), dres, a.inputs.data(), n, d, tps_.vocab_start, tps_.vocab);
    add_unit_gradients("embed");
    if (ready) (*ready)(0);
  }
}

template <typename T>
void Transformer<T>::decode_stage(const DecodeRows& rows, KvCache<T>& cache) {
  const int n = rows.size();
  MT_CHECK(n >= 1 && n <= max_batch_ * cfg_.seq_length, "a generation step of {} rows, the model takes 1 to {}", n,
           max_batch_ * cfg_.seq_length);
  MT_CHECK(seq_split_ == 1 && cp_.size == 1, "generation runs without sequence or context parallelism");
  Activations<T>& a = slot(0, max_batch_);
  be_.int_from_host(a.inputs.data(), rows.token.data(), size_t(n));
  be_.int_from_host(cache.row_sequence.data(), rows.sequence.data(), size_t(n));
  be_.int_from_host(cache.row_position.data(), rows.position.data(), size_t(n));
  if (stage_.first) embed(a, n);
  const Decoding decoding{rows, cache};
  for (int l = 0; l < num_layers_; ++l) {
    mark_progress();
    T* out = l + 1 < num_layers_ ? layer_input(a, l + 1) : a.out.data();
    layer_forward(a, layer_acts(a, l), layer_input(a, l), l, out, false, &decoding);
  }
  if (stage_.last) vocabulary_logits(a, n);
}

template <typename T>
void Transformer<T>::embed(Activations<T>& a, int n) {
  // Vocab-parallel embedding: each rank looks up its slice, the sum over TP
  // is the whole lookup (this rank's rows of it under sequence parallelism).
  const int d = cfg_.hidden_size;
  T* x = a.layers[0].x.data();
  T* lookup = seq_split_ > 1 ? ffn_out_.data() : x;  // [n, d]
  be_.embedding_forward(lookup, params_.value("embed"), a.inputs.data(), n, d, tps_.vocab_start, tps_.vocab);
  reduce_rows(lookup, x, n);
}

template <typename T>
void Transformer<T>::vocabulary_logits(Activations<T>& a, int n) {
  const int d = cfg_.hidden_size;
  be_.rmsnorm_forward(a.hf.data(), a.rstd_final.data(), a.out.data(), params_.value("final_norm"), n / seq_split_, d,
                      cfg_.norm_eps);
  const T* hf = whole_rows(a.hf.data(), gathered_, n);
  be_.gemm_acc(Trans::N, Trans::T, n, tps_.vocab, d, Acc(1), hf, d, params_.value("lm_head"), d, Acc(0),
               a.logits.data(), tps_.vocab);
}

template <typename T>
MicroBatchLoss Transformer<T>::forward(const int32_t* tokens, int B) {
  MT_CHECK(stage_.first && stage_.last, "forward() runs a whole model; a pipeline stage uses forward_stage()");
  return forward_stage(0, tokens, B);
}

template <typename T>
MicroBatchLoss Transformer<T>::forward_backward(const int32_t* tokens, int B, double ce_scale,
                                                double aux_scale) {
  const MicroBatchLoss loss = forward(tokens, B);
  backward_stage(0, nullptr, ce_scale, aux_scale);
  return loss;
}

template struct LayerActs<float>;
template struct LayerActs<double>;
template struct LayerActs<bf16>;
template class Transformer<float>;
template class Transformer<double>;
template class Transformer<bf16>;

}  // namespace mt
