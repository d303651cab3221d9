// The model's shape (docs/design.md section 3). Filled by launch/ from flags.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace mt {

struct ModelConfig {
  int vocab_size = 384;       // V, already rounded up (launch/ does the rounding)
  int hidden_size = 256;      // d
  int num_layers = 4;         // L
  int num_heads = 8;          // H
  int num_query_groups = 1;   // G (1 = multi-query attention)
  int kv_channels = 0;        // hd, the head size (--kv-channels); 0: d / H
  bool qk_layernorm = false;  // RMSNorm over each head's query and key before RoPE
  int ffn_hidden_size = 512;  // F of the dense MLPs (and of the experts without moe_ffn_hidden_size)
  bool swiglu = false;        // gated MLPs w2(silu(w1 x) * (w3 x)) instead of w2(gelu(w1 x))
  int num_experts = 8;        // E (1 = dense MLP)
  int router_topk = 2;        // K
  int moe_ffn_hidden_size = 0;  // F of a routed expert; 0: ffn_hidden_size
  // Which layers are MoE layers (1) and which dense (0), from
  // --moe-layer-freq; empty: every layer of a model with E > 1.
  std::vector<int> moe_layers = {};
  int shared_expert_size = 0;       // F of the MLP every token passes through beside the experts; 0: none
  bool shared_expert_gate = false;  // its output scaled by sigmoid(x gate^T) (Qwen2-MoE)
  int seq_length = 256;       // S
  double capacity_factor = 0.0;  // c (0 = no drops)
  // Routing (docs/design.md section 3.3).
  std::string router_score_function = "softmax";  // or "sigmoid"
  bool router_pre_softmax = false;    // weights: the softmax over all experts, not over the top K
  double router_topk_scaling_factor = 0.0;  // the weights times this; 0: none
  int router_num_groups = 0;          // group-limited routing: experts in this many groups; 0: none
  int router_group_topk = 0;          // of which a token picks this many
  std::string load_balancing_type = "aux_loss";  // aux_loss, seq_aux_loss, global_aux_loss or none
  double aux_loss_coeff = 0.01;  // alpha
  double z_loss_coeff = 0.0;     // router z-loss c (docs/design.md section 8); 0: off
  bool expert_bias = false;      // aux-loss-free balancing: a per-expert bias on the routing scores
  double expert_bias_update_rate = 1e-3;  // its step after each optimizer step
  double rope_theta = 10000.0;      // --rotary-base
  double rope_interpolation = 1.0;  // --rotary-seq-len-interpolation-factor: positions divided by it
  double norm_eps = 1e-5;
  // Documents inside a sample (docs/design.md section 9): RoPE positions
  // restart after each end-of-document token, and a token attends only to
  // its own document. eod_token is the tokenizer's (not recorded).
  bool reset_position_ids = false;
  bool reset_attention_mask = false;
  int eod_token = 256;

  int head_dim() const { return kv_channels > 0 ? kv_channels : hidden_size / num_heads; }
  bool is_moe() const { return num_experts > 1; }
  // Whether layer l (of the whole model) routes to experts.
  bool is_moe_layer(int l) const { return is_moe() && (moe_layers.empty() || moe_layers[size_t(l)] != 0); }
  int num_moe_layers() const;
  int expert_ffn() const { return moe_ffn_hidden_size > 0 ? moe_ffn_hidden_size : ffn_hidden_size; }
  bool has_documents() const { return reset_position_ids || reset_attention_mask; }
  // Throws mt::Error naming the flag at fault.
  void validate() const;
  void validate_moe() const;  // the experts' and router's fields
  // Parameters of the whole model, and those one token passes through.
  long long num_parameters() const;
  long long num_active_parameters() const;
  // Training FLOPs per token (forward + backward = 3 x forward), counting
  // matrix products of the active parameters and attention scores.
  double train_flops_per_token() const;
};

// --moe-layer-freq: N (every N-th layer, from layer 0, is an MoE layer) or
// Megatron's list form ("[1,0,1,0]", "[0]*3+[1]*29"), as the num_layers
// entries of ModelConfig::moe_layers. Throws naming the flag.
std::vector<int> parse_moe_layer_freq(const std::string& freq, int num_layers);

// One tensor-parallel rank's share of the model (docs/design.md section 4): query
// heads, F and V split over TP; kv heads split when G >= TP, else whole on
// every rank.
struct TpShape {
  int heads = 1, first_head = 0;
  int kv_heads = 1, first_kv_head = 0;
  bool kv_replicated = false;
  int ffn = 1;         // of a dense MLP
  int expert_ffn = 1;  // of a routed expert
  int shared_ffn = 0;  // of the shared expert
  int vocab = 1, vocab_start = 0;
};

// Throws naming the size that TP does not divide.
TpShape tp_shape(const ModelConfig& cfg, int tp_rank, int tp_size);

// The config as JSON, keyed by the flag names (what checkpoints record), and
// back; the reverse throws naming a missing key (the context's keys, which
// older checkpoints lack, default).
nlohmann::json model_config_to_json(const ModelConfig& cfg);
ModelConfig model_config_from_json(const nlohmann::json& j);
// The keys of the context a model is trained at, which a resumed run or an
// evaluation may change (no weight depends on them): the sequence length,
// RoPE's base and interpolation, and the document resets.
bool is_context_key(const std::string& key);

}  // namespace mt
