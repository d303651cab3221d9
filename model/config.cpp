#include "model/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include "runtime/check.h"

namespace mt {

void ModelConfig::validate() const {
  MT_CHECK(vocab_size > 0, "--vocab-size must be positive, got {}", vocab_size);
  MT_CHECK(hidden_size > 0, "--hidden-size must be positive, got {}", hidden_size);
  MT_CHECK(num_layers > 0, "--num-layers must be positive, got {}", num_layers);
  MT_CHECK(num_heads > 0, "--num-attention-heads must be positive, got {}", num_heads);
  MT_CHECK(kv_channels >= 0, "--kv-channels must be >= 0 (0: hidden-size / num-attention-heads), got {}",
           kv_channels);
  MT_CHECK(kv_channels > 0 || hidden_size % num_heads == 0,
           "--num-attention-heads {} does not divide --hidden-size {} (or give the head size, --kv-channels)",
           num_heads, hidden_size);
  MT_CHECK(head_dim() % 2 == 0, "head size {} ({}) must be even for RoPE", head_dim(),
           kv_channels > 0 ? "--kv-channels" : "hidden-size / num-attention-heads");
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
  validate_moe();
  MT_CHECK(seq_length > 0, "--seq-length must be positive, got {}", seq_length);
  MT_CHECK(!has_documents() || (eod_token >= 0 && eod_token < vocab_size),
           "--reset-position-ids/--reset-attention-mask need the end-of-document token {} inside the vocabulary "
           "of {}", eod_token, vocab_size);
  MT_CHECK(rope_theta > 0, "--rotary-base must be positive, got {}", rope_theta);
  MT_CHECK(rope_interpolation > 0, "--rotary-seq-len-interpolation-factor must be positive, got {}",
           rope_interpolation);
}

void ModelConfig::validate_moe() const {
  const bool moe = is_moe();
  MT_CHECK(moe_ffn_hidden_size >= 0, "--moe-ffn-hidden-size must be >= 0 (0: --ffn-hidden-size), got {}",
           moe_ffn_hidden_size);
  MT_CHECK(moe || moe_ffn_hidden_size == 0,
           "--moe-ffn-hidden-size {} is the routed experts' width, but a dense model (--num-experts 1) has none",
           moe_ffn_hidden_size);
  MT_CHECK(moe_layers.empty() || int(moe_layers.size()) == num_layers,
           "--moe-layer-freq gives {} layers, the model has --num-layers {}", moe_layers.size(), num_layers);
  for (int x : moe_layers) MT_CHECK(x == 0 || x == 1, "--moe-layer-freq entries must be 0 or 1, got {}", x);
  MT_CHECK(moe || moe_layers.empty(),
           "--moe-layer-freq places MoE layers, but a dense model (--num-experts 1) has none");
  MT_CHECK(shared_expert_size >= 0, "--moe-shared-expert-intermediate-size must be >= 0, got {}",
           shared_expert_size);
  MT_CHECK(moe || shared_expert_size == 0,
           "--moe-shared-expert-intermediate-size {}: a shared expert sits beside routed experts, and a dense "
           "model (--num-experts 1) has none; widen --ffn-hidden-size instead",
           shared_expert_size);
  MT_CHECK(!shared_expert_gate || shared_expert_size > 0,
           "--moe-shared-expert-gate gates the shared expert: give --moe-shared-expert-intermediate-size");
  MT_CHECK(router_score_function == "softmax" || router_score_function == "sigmoid",
           "--moe-router-score-function must be softmax or sigmoid, got '{}'", router_score_function);
  MT_CHECK(router_topk_scaling_factor >= 0, "--moe-router-topk-scaling-factor must be >= 0 (0: none), got {}",
           router_topk_scaling_factor);
  MT_CHECK(router_num_groups >= 0 && router_group_topk >= 0,
           "--moe-router-num-groups and --moe-router-group-topk must be >= 0, got {} and {}", router_num_groups,
           router_group_topk);
  MT_CHECK((router_num_groups > 0) == (router_group_topk > 0),
           "group-limited routing needs both --moe-router-num-groups and --moe-router-group-topk, got {} and {}",
           router_num_groups, router_group_topk);
  if (router_num_groups > 0) {
    MT_CHECK(moe, "--moe-router-num-groups groups experts, but a dense model (--num-experts 1) has none");
    MT_CHECK(num_experts % router_num_groups == 0, "--moe-router-num-groups {} does not divide --num-experts {}",
             router_num_groups, num_experts);
    MT_CHECK(router_group_topk <= router_num_groups,
             "--moe-router-group-topk {} is larger than --moe-router-num-groups {}", router_group_topk,
             router_num_groups);
    MT_CHECK(router_topk % router_group_topk == 0,
             "--moe-router-topk {} is not divisible by --moe-router-group-topk {} (each group picked gives "
             "top-k / group-top-k experts)",
             router_topk, router_group_topk);
    MT_CHECK(router_topk / router_group_topk <= num_experts / router_num_groups,
             "--moe-router-topk {} / --moe-router-group-topk {} is more experts than a group of {} holds",
             router_topk, router_group_topk, num_experts / router_num_groups);
  }
  MT_CHECK(load_balancing_type == "aux_loss" || load_balancing_type == "seq_aux_loss" ||
               load_balancing_type == "global_aux_loss" || load_balancing_type == "none",
           "--moe-router-load-balancing-type must be aux_loss, seq_aux_loss, global_aux_loss or none, got '{}'",
           load_balancing_type);
  // The bias shifts which experts a token picks. Megatron allows it only on
  // sigmoid scores, each expert's own: a bias on softmax scores would move
  // every expert's probability with one logit's, and a bias on logits
  // before a softmax cancels out of the weights it is kept out of.
  MT_CHECK(!expert_bias || router_score_function == "sigmoid",
           "--moe-router-enable-expert-bias works on sigmoid scores (Megatron's rule): set "
           "--moe-router-score-function sigmoid");
  MT_CHECK(!expert_bias || moe, "--moe-router-enable-expert-bias needs experts (--num-experts > 1)");
  MT_CHECK(expert_bias_update_rate >= 0, "--moe-router-bias-update-rate must be >= 0, got {}",
           expert_bias_update_rate);
  MT_CHECK(capacity_factor >= 0, "--moe-expert-capacity-factor must be >= 0, got {}",
           capacity_factor);
  MT_CHECK(aux_loss_coeff >= 0, "--moe-aux-loss-coeff must be >= 0, got {}", aux_loss_coeff);
  MT_CHECK(z_loss_coeff >= 0, "--moe-z-loss-coeff must be >= 0, got {}", z_loss_coeff);
}

int ModelConfig::num_moe_layers() const {
  int n = 0;
  for (int l = 0; l < num_layers; ++l) n += is_moe_layer(l);
  return n;
}

std::vector<int> parse_moe_layer_freq(const std::string& freq, int num_layers) {
  std::string text;
  for (char ch : freq)
    if (!std::isspace(static_cast<unsigned char>(ch))) text += ch;
  if (text.size() >= 2 && text.front() == '(' && text.back() == ')') text = text.substr(1, text.size() - 2);
  MT_CHECK(!text.empty(), "--moe-layer-freq is empty");
  std::vector<int> layers;
  if (text.front() != '[') {  // N: every N-th layer
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MT_CHECK(used == text.size() && n >= 1,
             "--moe-layer-freq '{}' is neither a positive integer nor a list such as [1,0,1,0] or [0]*3+[1]*29",
             freq);
    for (int l = 0; l < num_layers; ++l) layers.push_back(l % n == 0 ? 1 : 0);
  } else {  // [a,b,...] terms, each times an optional *N, joined by +
    size_t at = 0;
    auto fail = [&] {
      MT_FAIL("--moe-layer-freq '{}' is not a list of 0s and 1s such as [1,0,1,0] or [0]*3+[1]*29 (at character {})",
              freq, at + 1);
    };
    auto number = [&] {
      size_t begin = at;
      while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) ++at;
      if (at == begin || at - begin > 6) fail();
      return std::stoi(text.substr(begin, at - begin));
    };
    for (;;) {
      if (at >= text.size() || text[at] != '[') fail();
      std::vector<int> term;
      for (++at;; ++at) {
        term.push_back(number());
        if (at < text.size() && text[at] == ']') break;
        if (at >= text.size() || text[at] != ',') fail();
      }
      ++at;
      int times = 1;
      if (at < text.size() && text[at] == '*') {
        ++at;
        times = number();
      }
      for (int i = 0; i < times; ++i) layers.insert(layers.end(), term.begin(), term.end());
      if (at == text.size()) break;
      if (text[at] != '+') fail();
      ++at;
    }
  }
  MT_CHECK(int(layers.size()) == num_layers, "--moe-layer-freq '{}' gives {} layers, the model has --num-layers {}",
           freq, layers.size(), num_layers);
  for (int x : layers) MT_CHECK(x == 0 || x == 1, "--moe-layer-freq '{}': entries must be 0 or 1, got {}", freq, x);
  // Every layer an MoE layer is the default, recorded as no list.
  if (std::all_of(layers.begin(), layers.end(), [](int x) { return x == 1; })) layers.clear();
  return layers;
}

TpShape tp_shape(const ModelConfig& c, int r, int tp) {
  MT_CHECK(c.num_heads % tp == 0, "--num-attention-heads {} is not divisible by --tensor-model-parallel-size {}",
           c.num_heads, tp);
  MT_CHECK(c.ffn_hidden_size % tp == 0, "--ffn-hidden-size {} is not divisible by --tensor-model-parallel-size {}",
           c.ffn_hidden_size, tp);
  MT_CHECK(c.expert_ffn() % tp == 0,
           "--moe-ffn-hidden-size {} is not divisible by --tensor-model-parallel-size {}", c.expert_ffn(), tp);
  MT_CHECK(c.shared_expert_size % tp == 0,
           "--moe-shared-expert-intermediate-size {} is not divisible by --tensor-model-parallel-size {}",
           c.shared_expert_size, tp);
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
  s.expert_ffn = c.expert_ffn() / tp;
  s.shared_ffn = c.shared_expert_size / tp;
  s.vocab = c.vocab_size / tp;
  s.vocab_start = r * s.vocab;
  return s;
}

namespace {
long long attention_params(const ModelConfig& c) {
  const long long d = c.hidden_size, hd = c.head_dim();
  return d * c.num_heads * hd * 2 + 2LL * d * c.num_query_groups * hd + 2 * d  // wq wo wk wv norms
         + (c.qk_layernorm ? 2 * hd : 0);                                      // q_norm k_norm
}
// An MLP of hidden size F: w1, w2 (and w3 under SwiGLU).
long long mlp_params(const ModelConfig& c, int F) { return (c.swiglu ? 3LL : 2LL) * c.hidden_size * F; }
// What every token of an MoE layer passes through besides its K experts.
long long moe_shared_params(const ModelConfig& c) {
  return 1LL * c.num_experts * c.hidden_size  // router
         + (c.shared_expert_size > 0 ? mlp_params(c, c.shared_expert_size) : 0) +
         (c.shared_expert_gate ? c.hidden_size : 0);
}
// The layers' parameters with `experts` of each MoE layer's experts counted.
long long layer_params(const ModelConfig& c, long long experts) {
  const long long moe_layer = moe_shared_params(c) + experts * mlp_params(c, c.expert_ffn());
  const long long moe_layers = c.num_moe_layers();
  return c.num_layers * attention_params(c) + moe_layers * moe_layer +
         (c.num_layers - moe_layers) * mlp_params(c, c.ffn_hidden_size);
}
}  // namespace

long long ModelConfig::num_parameters() const {
  return 2LL * vocab_size * hidden_size + hidden_size + layer_params(*this, num_experts);
}

long long ModelConfig::num_active_parameters() const {
  return 2LL * vocab_size * hidden_size + hidden_size + layer_params(*this, router_topk);
}

double ModelConfig::train_flops_per_token() const {
  // Products: 2 FLOPs per active weight (the embedding is a lookup, not a
  // product), plus QK^T and PV: 2 * 2 * S * H * hd per layer, halved by the
  // causal mask's average but computed whole here, as the kernels do.
  double matmul = 2.0 * double(num_active_parameters() - 1LL * vocab_size * hidden_size);
  double attention = 4.0 * seq_length * num_heads * head_dim() * num_layers;
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
  f("kv_channels", c.kv_channels);
  f("qk_layernorm", c.qk_layernorm);
  f("ffn_hidden_size", c.ffn_hidden_size);
  f("swiglu", c.swiglu);
  f("num_experts", c.num_experts);
  f("moe_router_topk", c.router_topk);
  f("moe_ffn_hidden_size", c.moe_ffn_hidden_size);
  f("moe_layer_freq", c.moe_layers);
  f("moe_shared_expert_intermediate_size", c.shared_expert_size);
  f("moe_shared_expert_gate", c.shared_expert_gate);
  f("seq_length", c.seq_length);
  f("moe_expert_capacity_factor", c.capacity_factor);
  f("moe_router_score_function", c.router_score_function);
  f("moe_router_pre_softmax", c.router_pre_softmax);
  f("moe_router_topk_scaling_factor", c.router_topk_scaling_factor);
  f("moe_router_num_groups", c.router_num_groups);
  f("moe_router_group_topk", c.router_group_topk);
  f("moe_router_load_balancing_type", c.load_balancing_type);
  f("moe_aux_loss_coeff", c.aux_loss_coeff);
  f("moe_z_loss_coeff", c.z_loss_coeff);
  f("moe_router_enable_expert_bias", c.expert_bias);
  f("moe_router_bias_update_rate", c.expert_bias_update_rate);
  f("rope_theta", c.rope_theta);
  f("norm_eps", c.norm_eps);
  f("rotary_seq_len_interpolation_factor", c.rope_interpolation);
  f("reset_position_ids", c.reset_position_ids);
  f("reset_attention_mask", c.reset_attention_mask);
}

// The keys of the first checkpoint format's models, which every checkpoint
// has; the others default when absent (checkpoints from before they were
// recorded).
bool is_optional_key(const std::string& key) {
  static const char* kRequired[] = {"vocab_size",      "hidden_size",     "num_layers",
                                    "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                                    "num_experts",     "moe_router_topk", "seq_length",
                                    "moe_expert_capacity_factor", "moe_aux_loss_coeff", "rope_theta",
                                    "norm_eps"};
  return std::find(std::begin(kRequired), std::end(kRequired), key) == std::end(kRequired);
}

// Whether the JSON value v fits a field of type Field, and what it is not.
template <typename Field>
bool fits(const nlohmann::json& v, const char** kind) {
  if constexpr (std::is_same_v<Field, bool>) {
    *kind = "boolean";
    return v.is_boolean();
  } else if constexpr (std::is_same_v<Field, std::string>) {
    *kind = "string";
    return v.is_string();
  } else if constexpr (std::is_same_v<Field, std::vector<int>>) {
    *kind = "list of 0s and 1s";
    return v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& x) {
             return x.is_number_integer() && (x == 0 || x == 1);
           });
  } else if constexpr (std::is_integral_v<Field>) {
    *kind = "32-bit integer";
    return v.is_number_integer() && (v.is_number_unsigned() ? std::in_range<Field>(v.get<uint64_t>())
                                                             : std::in_range<Field>(v.get<int64_t>()));
  } else {
    *kind = "finite number";
    return v.is_number() && std::isfinite(v.get<double>());
  }
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
    const char* kind = "";
    MT_CHECK(fits<Field>(v, &kind), "the model config's '{}' is {}, not a {}", key, v.dump().substr(0, 80), kind);
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
