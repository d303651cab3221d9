// The MoE transformer of docs/design.md section 3 as one rank holds it: its
// tensor-parallel share of the layers of its pipeline stage. Forward and
// backward of micro-batches, gradients accumulated into Parameters::grads.
// A stage may have several micro-batches in flight (pipeline schedules), each
// in its own activation slot.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "model/config.h"
#include "model/dense_mlp.h"
#include "model/kv_cache.h"
#include "model/moe_layer.h"
#include "model/parameters.h"
#include "model/recompute.h"
#include "parallel/pipeline_stage.h"
#include "parallel/ring_attention.h"
#include "runtime/backend.h"

namespace mt {

// One layer's tensors inside the flat weight buffer (W = T) or gradient
// buffer (W = acc_t<T>).
template <typename W>
struct LayerWeights {
  W* attn_norm;  // [d]
  W* wq;         // [H*hd, d]
  W* wk;         // [G*hd, d]
  W* wv;         // [G*hd, d]
  W* q_norm;     // [hd] (--qk-layernorm; null without)
  W* k_norm;     // [hd]
  W* wo;         // [d, H*hd]
  W* mlp_norm;   // [d]
  MlpWeights<W> mlp;   // a dense layer's
  MoeWeights<W> moe;   // an MoE layer's
};

// What a layer's activations hold under activation recompute: everything;
// all but the attention core's output and log-sum-exp (selective); only the
// layer's input (the first layer of a group rebuilt by full recompute);
// nothing (the others of such a group).
enum class LayerKeep { Everything, AllButAttentionCore, Input, Nothing };

// Which MLPs a layer's activations hold: a dense layer's, an MoE layer's,
// or (for the layers full recompute rebuilds) both.
struct LayerMlps {
  bool dense = false, moe = false;
};

// What one layer keeps from the forward pass; tokens T = B * S; heads, kv
// heads and F are this tensor-parallel rank's share, and Tr the residual
// stream's rows on this rank: T, or T/TP under sequence parallelism.
// Statistics are Acc. Buffers a LayerKeep leaves out are empty.
template <typename T>
struct LayerActs {
  using Acc = acc_t<T>;
  // ep: the expert-parallel size the expert rows are sized for;
  // seq_split: TP under sequence parallelism, else 1 (Tr = T / seq_split).
  LayerActs(Backend<T>& be, const ModelConfig& cfg, const TpShape& tp, int batch, LayerMlps mlps,
            LayerKeep keep = LayerKeep::Everything, int ep = 1, int seq_split = 1);
  DeviceBuffer<T> x;            // [Tr, d] residual stream entering the layer
  DeviceBuffer<T> a;            // [Tr, d] attn_norm(x)
  DeviceBuffer<Acc> rstd_attn;  // [Tr]
  DeviceBuffer<T> q;          // [T, Hl*hd] after RoPE
  DeviceBuffer<T> k, v;       // [T, Gl*hd] (k after RoPE)
  // --qk-layernorm: q and k before their heads' RMSNorm, and its statistics.
  DeviceBuffer<T> q_pre, k_pre;
  DeviceBuffer<Acc> rstd_q, rstd_k;  // [T*Hl], [T*Gl]
  DeviceBuffer<Acc> lse;      // [B, Hl, S] log-sum-exp of each attention row
  DeviceBuffer<T> o;          // [T, Hl*hd] attention output, before wo
  DeviceBuffer<T> h;          // [Tr, d] x + o wo^T
  DeviceBuffer<T> m;          // [Tr, d] mlp_norm(h)
  DeviceBuffer<Acc> rstd_mlp; // [Tr]
  MlpActs<T> mlp;  // a dense layer's
  MoeActs<T> moe;  // an MoE layer's
};

// Everything one micro-batch keeps between its forward and backward pass on
// one stage. Logits, losses and statistics are Acc (float32 under bf16);
// Tr as in LayerActs.
template <typename T>
struct Activations {
  using Acc = acc_t<T>;
  // keep: what each of the stage's layers holds.
  Activations(Backend<T>& be, const ModelConfig& cfg, const TpShape& tp, const StageSpan& stage,
              int batch, const std::vector<LayerKeep>& keep, int ep = 1, int seq_split = 1);
  int batch;
  DeviceBuffer<T, int32_t> inputs, targets;  // [T]
  std::vector<int32_t> host_inputs;          // [T] inputs on the host (the routing hash)
  // With document resets (ModelConfig::has_documents): the position in its
  // sample where each token's document begins (for RoPE and attention).
  DeviceBuffer<T, int32_t> doc_start;  // [T]
  // Context parallelism: each row's RoPE position (its position in the
  // whole sample, less its document's start with --reset-position-ids).
  DeviceBuffer<T, int32_t> rope_position;  // [T]
  std::vector<LayerActs<T>> layers;          // the stage's layers
  DeviceBuffer<T> out;         // [Tr, d] output of the stage's last layer
  // The last stage only:
  DeviceBuffer<T> hf;            // [Tr, d] final_norm(out)
  DeviceBuffer<Acc> rstd_final;  // [Tr]
  DeviceBuffer<Acc> logits;      // [T, V/TP] this rank's vocabulary slice
  DeviceBuffer<Acc> losses;      // [T] per-token cross-entropy
  DeviceBuffer<Acc> ce_stats;    // [3 T] row max and partial sums of the cross-entropy
};

// Tokens each expert of this stage's MoE layers received, and assignments
// the capacity dropped, since the last clear(): [stage layer][expert]; and,
// per layer, a hash of which tokens went where: the sum over kept
// assignments of a 31-bit hash of (expert, position in the sequence, token
// id), so two runs whose counts agree but which swapped tokens between
// experts still differ. The logs report them summed over the global batch;
// the float32 equivalence tests compare them to tell a routing flip (a
// near-tie in top-K resolved the other way by rounding) from an error.
struct ExpertLoad {
  int experts = 0;
  std::vector<int64_t> routed, dropped;  // [stage layers * E]
  std::vector<int64_t> hash;             // [stage layers]
  std::vector<float> bias;               // [layers * E] model_expert_load's expert bias; empty without
  static ExpertLoad zeros(size_t layers, int experts) {
    const size_t n = layers * size_t(experts);
    return {experts, std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(layers), {}};
  }
  void clear() {
    std::fill(routed.begin(), routed.end(), 0);
    std::fill(dropped.begin(), dropped.end(), 0);
    std::fill(hash.begin(), hash.end(), 0);
  }
};

// How a rank's share of the model is split and kept beyond its groups.
struct TransformerOptions {
  bool sequence_parallel = false;  // the residual stream split over TP by rows (section 4.1)
  bool grads_in_t = false;         // --grad-reduce-in-bf16: gradients accumulate in T (section 8)
  // Context parallelism: each sample's S tokens split over these ranks in
  // the load-balanced chunks of parallel/ring_attention.h; a rank holds S/CP
  // rows a sample and attends by ring attention.
  ProcessGroup cp = {};
};

template <typename T>
class Transformer final : public PipelineStage<T> {
 public:
  using Acc = acc_t<T>;
  // micro_batch: the largest batch a micro-batch may have. tp: this rank's
  // tensor-parallel group; stage: its pipeline stage (default: one rank
  // holding everything).
  // data_parallel: pads the flat buffers for ZeRO-1 (Parameters).
  // recompute: what the backward pass rebuilds instead of keeping.
  // ep: this rank's expert-parallel group (it holds E/EP experts a layer).
  // options: sequence parallelism (a no-op with one TP rank) and the
  // gradients' type.
  Transformer(Backend<T>& be, const ModelConfig& cfg, int micro_batch, const ProcessGroup& tp = {},
              const StageSpan& stage = {}, int data_parallel = 1, const RecomputeConfig& recompute = {},
              const ProcessGroup& ep = {}, const TransformerOptions& options = {});

  const ModelConfig& config() const { return cfg_; }
  const StageSpan& stage() const { return stage_; }
  Parameters<T>& params() { return params_; }
  const Parameters<T>& params() const { return params_; }
  Backend<T>& backend() override { return be_; }

  // --- one stage of a pipeline --------------------------------------------
  // tokens: host [B, S+1]; inputs are the first S of each row, targets the
  // last S. Ids must be below the vocabulary size (checked by the data side).
  // The first stage embeds the tokens; a later stage reads its input from
  // stage_input(slot), filled by the caller. The last stage computes the
  // cross-entropy (ce_sum is 0 elsewhere); aux is that of the stage's layers.
  MicroBatchLoss forward_stage(int slot, const int32_t* tokens, int B) override;
  // Backward of  ce_scale * sum(CE) + aux_scale * sum(aux)  for the micro-
  // batch in `slot`: the last stage starts from the loss, a former stage from
  // grad_output = d loss / d stage output. Leaves d loss / d stage input in
  // stage_input_grad() (until the next backward). ready, when given, is told
  // as each layer's gradients are done: the step's last backward pass.
  void backward_stage(int slot, const T* grad_output, double ce_scale, double aux_scale,
                      const GradsReady* ready = nullptr) override;
  T* stage_input(int slot) override;        // [Tr, d]
  const T* stage_output(int slot) override;  // [Tr, d]
  const T* stage_input_grad() const override { return dres_.data(); }
  // The last stage: each token's cross-entropy of the micro-batch in `slot`
  // [T] (on acc()), until its next forward pass.
  const Acc* token_losses(int slot) const { return slots_.at(slot)->losses.data(); }
  // The last stage: the logits of the micro-batch in `slot`, [T, V/TP]
  // (this TP rank's vocabulary slice, tp_shape), until its next forward pass.
  const Acc* logits(int slot) const { return slots_.at(slot)->logits.data(); }
  size_t boundary_elements(int B) const override {
    return size_t(B) * rows_.seq_length / size_t(seq_split_) * cfg_.hidden_size;
  }
  bool sequence_parallel() const { return seq_split_ > 1; }
  int slots() const { return int(slots_.size()); }
  // Device bytes of one micro-batch's activation slot, and of the rest the
  // model holds beside its parameters and slots: the backward pass's
  // gradients, recompute's rebuilt layers, the MLPs' and experts' work
  // space, the rows sequence parallelism gathers (docs/planning.md).
  int64_t activation_bytes() const { return activation_bytes_; }
  int64_t workspace_bytes() const { return workspace_bytes_; }
  int max_batch() const override { return max_batch_; }
  // Summed over every forward pass since expert_load().clear().
  ExpertLoad& expert_load() { return expert_load_; }
  // The expert all-to-alls' traffic (nothing without EP).
  DispatchStats& dispatch_stats() { return moe_.dispatch_stats(); }
  // The whole model's load, [num_layers * E], summed over `group` (nullptr:
  // this rank alone), and with --moe-router-enable-expert-bias each MoE
  // layer's bias, which every rank holding the layer has alike. Collective
  // over group; a TP group counts once, as its ranks route alike.
  ExpertLoad model_expert_load(Communicator* group) const;

  // --- generation with a key/value cache ------------------------------------
  // One step over `rows` (at most max_batch() * S of them) in slot 0:
  // the first stage embeds the tokens, a later one reads stage_input(0)
  // [n, d]; each layer stores the rows' keys and values in `cache` and
  // attends to their sequences' cached positions. The last stage leaves
  // logits(0) [n, V/TP]. Collective over the TP and EP groups. Not under
  // sequence parallelism (a training layout).
  void decode_stage(const DecodeRows& rows, KvCache<T>& cache);
  KvCache<T> make_kv_cache(int sequences) {
    return KvCache<T>(be_, cfg_, tps_, num_layers_, sequences, max_batch_ * cfg_.seq_length);
  }

  // --- one rank holding the whole model -------------------------------------
  MicroBatchLoss forward(const int32_t* tokens, int B);
  // Forward, then backward of  ce_scale * sum(CE) + aux_scale * sum(aux),
  // accumulated into params().grads.
  MicroBatchLoss forward_backward(const int32_t* tokens, int B, double ce_scale, double aux_scale);

  // Gradients of tensors that are whole on every TP rank but see only part
  // of the heads (wk, wv when G < TP) stay partial until this sums them over
  // the TP group; once a step (a no-op on one rank).
  void reduce_partial_grads();

  // --- what routing keeps between steps (RouterState, model/router.h) --------
  // At the start of a training step: its forward passes count from zero
  // (validations and samples since the last step counted too).
  void start_step();
  // After an optimizer step that updated the model; collective over `dp`,
  // the ranks of this stage that route other tokens (expert parallelism
  // splits within it). Each MoE layer's kept assignments and
  // load-balancing choices are summed over the step's global batch; the
  // expert bias moves by rate * sign(mean load - load of e) (arXiv
  // 2408.15664, Megatron's get_updated_expert_bias), and global_aux_loss's
  // shares become the batch's.
  void update_router_state(const ProcessGroup& dp);
  // [stage layers]; a dense layer's is empty.
  std::vector<RouterState>& router_state() { return router_state_; }

 private:
  // Device bytes alive before the first member was built.
  const int64_t bytes_before_ = device_buffer_bytes.load();
  Activations<T>& slot(int s, int B);  // created on first use
  // Layer l (counted from 0 on the stage) of micro-batch `slot`: reads x,
  // fills acts and writes the layer's output; returns its router losses.
  // rebuilding: full recompute's second forward pass, which leaves the
  // expert load alone.
  // decoding: generation's step (decode_stage), whose rows use the cache.
  struct Decoding {
    const DecodeRows& rows;
    KvCache<T>& cache;
  };
  RouterLosses layer_forward(const Activations<T>& slot, LayerActs<T>& acts, const T* x, int l, T* out,
                             bool rebuilding, const Decoding* decoding = nullptr);
  // The attention core of layer l over q, k, v after their projections:
  // RoPE, then causal attention of the micro-batch, or the decoding rows'
  // attention through the cache; writes o [n, Hl*hd] and, training, lse.
  void attention_core(const Activations<T>& slot, LayerActs<T>& acts, int l, T* o, Acc* lse,
                      const Decoding* decoding);
  void count_expert_load(const Routing& r, const std::vector<int32_t>& inputs, int l);
  // dx: in d loss / d output of layer l, out d loss / d input.
  void layer_backward(const Activations<T>& slot, LayerActs<T>& acts, const T* x, int l, T* dx, double aux_scale);
  // Where layer l of a micro-batch keeps its input and its activations: in
  // the micro-batch's slot, or in rebuilt_ for a layer full recompute rebuilds.
  T* layer_input(Activations<T>& slot, int l);
  LayerActs<T>& layer_acts(Activations<T>& slot, int l);
  // Full recompute: the forward pass of a group again, into rebuilt_.
  void rebuild(Activations<T>& slot, const RecomputeGroup& g);
  // The first stage: the embeddings of a.inputs' first n tokens into the
  // first layer's input. The last stage: the logits of the last layer's
  // first n rows, a.logits [n, V/TP].
  void embed(Activations<T>& a, int n);
  void vocabulary_logits(Activations<T>& a, int n);
  // Sequence parallelism's two collectives over the [n, d] rows of a
  // micro-batch (parallel/tensor_parallel.h): the whole rows a TP-split
  // product reads (`local` itself without it), and the products' partial
  // sums reduced into this rank's rows.
  const T* whole_rows(const T* local, DeviceBuffer<T>& whole, int n);
  void reduce_rows(T* partial, T* local, int n);
  AttentionShape attention_shape(const Activations<T>& slot) const;
  AttentionShape attention_shape(int batch, const int32_t* doc_start) const;
  // The attention core's forward: the kernel, or the ring under context
  // parallelism.
  void attend(T* o, Acc* lse, const LayerActs<T>& a, const Activations<T>& slot);
  RopeShape rope_shape(const Activations<T>& slot, int heads) const;
  // Pointers into the flat buffer of the tensors named `layers/{l}/...`:
  // at their offsets, or their gradient offsets (ParamTensor::grad_offset).
  template <typename W>
  LayerWeights<W> layer_tensors(int l, W* flat, bool gradients) const;
  // With gradients in T: the unit's gradients of this micro-batch added
  // into the T buffer (Parameters::add_unit_gradients); else nothing.
  void add_unit_gradients(const std::string& unit);

  Backend<T>& be_;
  ModelConfig cfg_;
  ModelConfig rows_;  // cfg_ with seq_length this rank's rows a sample: S, or S/CP
  ProcessGroup tp_;
  int seq_split_;  // TP under sequence parallelism, else 1
  TpShape tps_;
  StageSpan stage_;
  int num_layers_;       // on this stage
  ModelConfig ffn_cfg_;  // the MLP's and experts' view: this rank's share of F
  int max_batch_;
  Parameters<T> params_;
  std::vector<LayerWeights<T>> weights_;   // [stage layers], resolved once
  std::vector<LayerWeights<Acc>> grads_;
  // [stage layers][region] flat offset of the layer's first tensor in each
  // region of the flat buffers (Parameters::regions)
  std::vector<std::vector<size_t>> layer_offsets_;
  std::vector<std::unique_ptr<Activations<T>>> slots_;
  std::vector<RecomputeGroup> recompute_groups_;  // [stage layers]
  std::vector<LayerKeep> slot_keep_;              // [stage layers] what a slot holds of each
  std::vector<LayerActs<T>> rebuilt_;             // [largest recomputed group] full recompute's layers
  DeviceBuffer<T> rebuilt_out_;                   // [T, d] output of a rebuilt group's last layer
  DeviceBuffer<T> core_o_;                        // [T, Hl*hd] selective recompute's attention output
  DeviceBuffer<Acc> core_lse_;                    // [B, Hl, S] and its log-sum-exp
  ExpertLoad expert_load_;
  std::vector<RouterState> router_state_;  // [stage layers]
  ProcessGroup ep_;
  MoeLayer<T> moe_;          // every MoE layer's route, dispatch, experts and combine
  MlpScratch<T> mlp_scratch_;  // the dense MLPs' backward work space
  // [T, *] gradients of the backward pass
  DeviceBuffer<T> ffn_out_;  // [T, d]
  DeviceBuffer<T> dres_, dh_, da_, dq_, dk_, dv_, do_, dm_, dlogits_, dhf_;
  // Sequence parallelism: [T, d] rows gathered over TP (the input of a
  // product, and a gradient), and [T/TP, d] an input gradient's rows.
  DeviceBuffer<T> gathered_, gathered_grad_, dlocal_;
  DeviceBuffer<T> dq_pre_, dk_pre_;  // --qk-layernorm: gradients before the heads' RMSNorm
  int64_t activation_bytes_ = 0, workspace_bytes_ = 0;
  // Context parallelism: the group, this rank's positions of a sample's
  // rows (cp_chunk_positions), and the ring.
  ProcessGroup cp_;
  std::vector<int32_t> cp_positions_;
  std::unique_ptr<RingAttention<T>> ring_;
};

extern template class Transformer<float>;
extern template class Transformer<double>;
extern template class Transformer<bf16>;

}  // namespace mt
