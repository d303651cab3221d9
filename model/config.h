// The model's shape (docs/design.md section 3). Filled by launch/ from flags.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace mt {

struct ModelConfig {
  int vocab_size = 384;       // V, already rounded up (launch/ does the rounding)
  int hidden_size = 256;      // d
  int num_layers = 4;         // L
  int num_heads = 8;          // H
  int num_query_groups = 1;   // G (1 = multi-query attention)
  int ffn_hidden_size = 512;  // F
  int num_experts = 8;        // E (1 = dense MLP)
  int router_topk = 2;        // K
  int seq_length = 256;       // S
  double capacity_factor = 0.0;  // c (0 = no drops)
  double aux_loss_coeff = 0.01;  // alpha
  double z_loss_coeff = 0.0;     // router z-loss c (docs/design.md section 8); 0: off
  double rope_theta = 10000.0;      // --rotary-base
  double rope_interpolation = 1.0;  // --rotary-seq-len-interpolation-factor: positions divided by it
  double norm_eps = 1e-5;
  // Documents inside a sample (docs/design.md section 9): RoPE positions
  // restart after each end-of-document token, and a token attends only to
  // its own document. eod_token is the tokenizer's (not recorded).
  bool reset_position_ids = false;
  bool reset_attention_mask = false;
  int eod_token = 256;

  int head_dim() const { return hidden_size / num_heads; }
  bool is_moe() const { return num_experts > 1; }
  bool has_documents() const { return reset_position_ids || reset_attention_mask; }
  // Throws mt::Error naming the flag at fault.
  void validate() const;
  // Parameters of the whole model, and those one token passes through.
  long long num_parameters() const;
  long long num_active_parameters() const;
  // Training FLOPs per token (forward + backward = 3 x forward), counting
  // matrix products of the active parameters and attention scores.
  double train_flops_per_token() const;
};

// One tensor-parallel rank's share of the model (docs/design.md section 4): query
// heads, F and V split over TP; kv heads split when G >= TP, else whole on
// every rank.
struct TpShape {
  int heads = 1, first_head = 0;
  int kv_heads = 1, first_kv_head = 0;
  bool kv_replicated = false;
  int ffn = 1;
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
