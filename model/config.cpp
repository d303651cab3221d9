#include "model/config.h"

#include <cmath>
#include <utility>

#include "runtime/check.h"

namespace mt {

void ModelConfig::validate() const {
  MT_CHECK(vocab_size > 0, "--vocab-size must be positive, got {}", vocab_size);
  MT_CHECK(hidden_size > 0, "--hidden-size must be positive, got {}", hidden_size);
  MT_CHECK(num_layers > 0, "--num-layers must be positive, got {}", num_layers);
  MT_CHECK(num_heads > 0, "--num-attention-heads must be positive, got {}", num_heads);
  MT_CHECK(hidden_size % num_heads == 0,
           "--num-attention-heads {} does not divide --hidden-size {}", num_heads, hidden_size);
  MT_CHECK(head_dim() % 2 == 0, "head size {} (hidden-size / num-attention-heads) must be even for RoPE",
           head_dim());
  MT_CHECK(num_query_groups > 0, "--num-query-groups must be positive, got {}", num_query_groups);
  MT_CHECK(num_heads % num_query_groups == 0,
           "--num-query-groups {} does not divide --num-attention-heads {}", num_query_groups,
           num_heads);
  MT_CHECK(ffn_hidden_size > 0, "--ffn-hidden-size must be positive, got {}", ffn_hidden_size);
  MT_CHECK(num_experts > 0, "--num-experts must be positive, got {}", num_experts);
  MT_CHECK(router_topk > 0, "--moe-router-topk must be positive, got {}", router_topk);
  MT_CHECK(router_topk <= num_experts, "--moe-router-topk {} is larger than --num-experts {}",
           router_topk, num_experts);
  MT_CHECK(num_experts > 1 || router_topk == 1,
           "a dense model (--num-experts 1) routes nothing: --moe-router-topk must be 1, got {}",
           router_topk);
  MT_CHECK(seq_length > 0, "--seq-length must be positive, got {}", seq_length);
  MT_CHECK(!has_documents() || (eod_token >= 0 && eod_token < vocab_size),
           "--reset-position-ids/--reset-attention-mask need the end-of-document token {} inside the vocabulary "
           "of {}", eod_token, vocab_size);
  MT_CHECK(rope_theta > 0, "--rotary-base must be positive, got {}", rope_theta);
  MT_CHECK(rope_interpolation > 0, "--rotary-seq-len-interpolation-factor must be positive, got {}",
           rope_interpolation);
  MT_CHECK(capacity_factor >= 0, "--moe-expert-capacity-factor must be >= 0, got {}",
           capacity_factor);
  MT_CHECK(aux_loss_coeff >= 0, "--moe-aux-loss-coeff must be >= 0, got {}", aux_loss_coeff);
  MT_CHECK(z_loss_coeff >= 0, "--moe-z-loss-coeff must be >= 0, got {}", z_loss_coeff);
}

TpShape tp_shape(const ModelConfig& c, int r, int tp) {
  MT_CHECK(c.num_heads % tp == 0, "--num-attention-heads {} is not divisible by --tensor-model-parallel-size {}",
           c.num_heads, tp);
  MT_CHECK(c.ffn_hidden_size % tp == 0, "--ffn-hidden-size {} is not divisible by --tensor-model-parallel-size {}",
           c.ffn_hidden_size, tp);
  MT_CHECK(c.vocab_size % tp == 0,
           "vocabulary size {} is not divisible by --tensor-model-parallel-size {} (set "
           "--make-vocab-size-divisible-by or --vocab-size)",
           c.vocab_size, tp);
  const bool kv_replicated = c.num_query_groups < tp;
  MT_CHECK(kv_replicated || c.num_query_groups % tp == 0,
           "--num-query-groups {} is not divisible by --tensor-model-parallel-size {} (a G below "
           "TP is replicated, a G at or above TP must divide by it)",
           c.num_query_groups, tp);
  TpShape s;
  s.heads = c.num_heads / tp;
  s.first_head = r * s.heads;
  s.kv_replicated = kv_replicated;
  s.kv_heads = kv_replicated ? c.num_query_groups : c.num_query_groups / tp;
  s.first_kv_head = kv_replicated ? 0 : r * s.kv_heads;
  s.ffn = c.ffn_hidden_size / tp;
  s.vocab = c.vocab_size / tp;
  s.vocab_start = r * s.vocab;
  return s;
}

namespace {
long long attention_params(const ModelConfig& c) {
  long long d = c.hidden_size, hd = c.head_dim();
  return d * c.num_heads * hd * 2 + 2LL * d * c.num_query_groups * hd + 2 * d;  // wq wo wk wv norms
}
long long expert_params(const ModelConfig& c) { return 2LL * c.hidden_size * c.ffn_hidden_size; }
long long router_params(const ModelConfig& c) {
  return c.is_moe() ? 1LL * c.num_experts * c.hidden_size : 0;
}
}  // namespace

long long ModelConfig::num_parameters() const {
  long long per_layer = attention_params(*this) + router_params(*this) + num_experts * expert_params(*this);
  return 2LL * vocab_size * hidden_size + hidden_size + num_layers * per_layer;
}

long long ModelConfig::num_active_parameters() const {
  long long per_layer = attention_params(*this) + router_params(*this) + router_topk * expert_params(*this);
  return 2LL * vocab_size * hidden_size + hidden_size + num_layers * per_layer;
}

double ModelConfig::train_flops_per_token() const {
  // Products: 2 FLOPs per active weight (the embedding is a lookup, not a
  // product), plus QK^T and PV: 2 * 2 * S * d per layer, halved by the
  // causal mask's average but computed whole here, as the kernels do.
  double matmul = 2.0 * double(num_active_parameters() - 1LL * vocab_size * hidden_size);
  double attention = 4.0 * seq_length * hidden_size * num_layers;
  return 3.0 * (matmul + attention);
}

namespace {

// The model config's fields under their checkpoint keys, one table for both
// directions. C is ModelConfig or const ModelConfig.
template <typename C, typename F>
void for_each_model_field(C& c, F&& f) {
  f("vocab_size", c.vocab_size);
  f("hidden_size", c.hidden_size);
  f("num_layers", c.num_layers);
  f("num_attention_heads", c.num_heads);
  f("num_query_groups", c.num_query_groups);
  f("ffn_hidden_size", c.ffn_hidden_size);
  f("num_experts", c.num_experts);
  f("moe_router_topk", c.router_topk);
  f("seq_length", c.seq_length);
  f("moe_expert_capacity_factor", c.capacity_factor);
  f("moe_aux_loss_coeff", c.aux_loss_coeff);
  f("moe_z_loss_coeff", c.z_loss_coeff);
  f("rope_theta", c.rope_theta);
  f("norm_eps", c.norm_eps);
  f("rotary_seq_len_interpolation_factor", c.rope_interpolation);
  f("reset_position_ids", c.reset_position_ids);
  f("reset_attention_mask", c.reset_attention_mask);
}

// Recorded since the context could change on resume; absent: the default.
bool is_optional_key(const std::string& key) {
  return key == "rotary_seq_len_interpolation_factor" || key == "reset_position_ids" ||
         key == "reset_attention_mask" || key == "moe_z_loss_coeff";
}

}  // namespace

nlohmann::json model_config_to_json(const ModelConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  for_each_model_field(c, [&](const char* key, const auto& field) { j[key] = field; });
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  MT_CHECK(j.is_object(), "the model config is not a JSON object: {}", j.dump().substr(0, 80));
  ModelConfig c;
  for_each_model_field(c, [&](const char* key, auto& field) {
    if (!j.contains(key) && is_optional_key(key)) return;
    MT_CHECK(j.contains(key), "the model config has no '{}'", key);
    using Field = std::decay_t<decltype(field)>;
    const nlohmann::json& v = j.at(key);
    // A number of the field's kind that fits it (JSON's integers are 64-bit).
    bool fits = false;
    if constexpr (std::is_same_v<Field, bool>) fits = v.is_boolean();
    else if constexpr (std::is_integral_v<Field>)
      fits = v.is_number_integer() && (v.is_number_unsigned() ? std::in_range<Field>(v.get<uint64_t>())
                                                               : std::in_range<Field>(v.get<int64_t>()));
    else fits = v.is_number() && std::isfinite(v.get<double>());
    MT_CHECK(fits, "the model config's '{}' is {}, not a {}", key, v.dump().substr(0, 80),
             std::is_same_v<Field, bool> ? "boolean" : std::is_integral_v<Field> ? "32-bit integer" : "finite number");
    field = v.get<Field>();
  });
  c.validate();
  return c;
}

bool is_context_key(const std::string& key) {
  return key == "seq_length" || key == "rope_theta" || key == "rotary_seq_len_interpolation_factor" ||
         key == "reset_position_ids" || key == "reset_attention_mask";
}

}  // namespace mt
