#include "checkpoint/checkpoint_file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "checkpoint/hdf5_file.h"
#include "runtime/check.h"
#include "runtime/version.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {

std::vector<uint64_t> dims(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// One flat float buffer (weights or a moment) as its named tensors. Writes
// are collective, so every rank takes part in every tensor of the model:
// where it holds the tensor, with its share of the block's leading rows
// (the replicas holding the same block split it: the data-parallel ones,
// or for an expert the expert-DP ones; a tensor every TP rank holds whole
// is written by TP rank 0's replicas); with nothing where another stage
// does.
template <typename T>
void write_tensors(H5File& f, const std::string& group, const ModelConfig& model,
                   const Parameters<T>& p, const float* flat, const Topology& topo) {
  const Coords at = topo.coords();
  for (const ParamTensor& logical : param_table(model, at.tp, topo.tp().size, {}, topo.ep().rank, topo.ep().size)) {
    mark_progress();  // a long save is progress
    const ParamTensor* t = p.find_or_null(logical.name);
    std::vector<uint64_t> offset = dims(logical.block.offset), count = dims(logical.block.count);
    const float* data = flat;
    if (!t || (t->replicated() && at.tp != 0)) {
      std::fill(count.begin(), count.end(), 0);
    } else {
      // The ranks holding this block: DP (x CP) replicas, or expert-DP (x CP).
      const ProcessGroup& holders = t->is_expert ? topo.edp_cp() : topo.dp_cp();
      const uint64_t replicas = uint64_t(holders.size), replica = uint64_t(holders.rank);
      const uint64_t rows = count[0], row_elems = t->numel / rows;
      const uint64_t first = rows * replica / replicas, end = rows * (replica + 1) / replicas;
      offset[0] += first;
      count[0] = end - first;
      data = flat + t->offset + first * row_elems;
    }
    f.write(group + "/" + logical.name, dims(logical.shape), offset, count, data);
  }
}

template <typename T>
void read_tensors(const H5File& f, const std::string& group, const Parameters<T>& p,
                  float* flat) {
  for (const ParamTensor& t : p.tensors) {
    mark_progress();
    const std::string name = group + "/" + t.name;
    MT_CHECK(f.exists(name), "checkpoint {} has no tensor '{}'", f.path(), name);
    const std::vector<uint64_t> stored = f.shape(name), expected = dims(t.shape);
    MT_CHECK(stored == expected, "checkpoint {}: tensor '{}' has shape [{}], the model expects [{}]",
             f.path(), name, fmt::join(stored, ", "), fmt::join(expected, ", "));
    f.read(name, dims(t.block.offset), dims(t.block.count), flat + t.offset);
  }
}

// The AdamW moments (shard-packed) under their checkpoint groups.
std::array<std::pair<const char*, DeviceBuffer<float>*>, 2> moments(AdamW<float>& optim) {
  return {{{"optim/exp_avg", &optim.exp_avg()}, {"optim/exp_avg_sq", &optim.exp_avg_sq()}}};
}

// The float32 weights a checkpoint holds, flat: the model's own, or under
// bf16 the master weights, gathered into `scratch`.
template <typename T>
const float* float32_weights(Parameters<T>& params, MasterWeights<T>* master, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    return params.values.data();
  } else {
    MT_CHECK(master != nullptr, "a {}-byte model saves its float32 master weights: none given", sizeof(T));
    scratch.resize(params.padded_size());
    master->gather(scratch.data());
    return scratch.data();
  }
}

// A moment's ZeRO-1 shards gathered from the replicas into the flat layout.
void gather_moment(GradSync<float>& grad_sync, const DeviceBuffer<float>& shard, std::vector<float>& flat) {
  grad_sync.shard_to_flat(shard.data(), flat.data());
  grad_sync.all_gather(flat.data());
}

// The router state's datasets of MoE layer l, each with the member of
// RouterState it holds: the expert bias, global_aux_loss's shares.
std::vector<std::pair<std::string, std::vector<float> RouterState::*>> router_datasets(const ModelConfig& model,
                                                                                       int l) {
  std::vector<std::pair<std::string, std::vector<float> RouterState::*>> out;
  if (!model.is_moe_layer(l)) return out;
  const std::string prefix = fmt::format("model/layers/{}/", l);
  if (model.expert_bias) out.push_back({prefix + "expert_bias", &RouterState::expert_bias});
  if (model.load_balancing_type == "global_aux_loss")
    out.push_back({prefix + "global_aux_share", &RouterState::global_share});
  return out;
}

}  // namespace

std::vector<std::string> router_state_datasets(const ModelConfig& model) {
  std::vector<std::string> names;
  for (int l = 0; l < model.num_layers; ++l)
    for (const auto& dataset : router_datasets(model, l)) names.push_back(dataset.first);
  return names;
}

namespace {

// Collective: every MoE layer's router state, written by the first TP and
// DP rank of the stage that holds it (every rank of a stage holds the same).
void write_router_state(H5File& f, const ModelConfig& model, const Topology& topo,
                        const std::vector<RouterState>* layers, int first_layer) {
  const uint64_t E = uint64_t(model.num_experts);
  const std::vector<float> unset(E, std::numeric_limits<float>::quiet_NaN());
  for (int l = 0; l < model.num_layers; ++l)
    for (const auto& [name, member] : router_datasets(model, l)) {
      const bool held = layers && l >= first_layer && l < first_layer + int(layers->size());
      const bool writes = held && topo.coords().tp == 0 && topo.coords().dp == 0 && topo.coords().cp == 0;
      const std::vector<float>* v = held ? &((*layers)[size_t(l - first_layer)].*member) : nullptr;
      const float* data = v && !v->empty() ? v->data() : unset.data();
      f.write(name, {E}, {0}, {writes ? E : 0}, data);
    }
}

// This stage's MoE layers' router state; unset shares (NaN) stay empty.
void read_router_state(const H5File& f, const ModelConfig& model, const StageRouterState& router) {
  if (!router.layers) return;
  const uint64_t E = uint64_t(model.num_experts);
  for (size_t i = 0; i < router.layers->size(); ++i)
    for (const auto& [name, member] : router_datasets(model, router.first_layer + int(i))) {
      MT_CHECK(f.exists(name), "checkpoint {} has no '{}' (the router state of this model)", f.path(), name);
      MT_CHECK(f.shape(name) == std::vector<uint64_t>{E}, "checkpoint {}: '{}' is not [{}]", f.path(), name, E);
      std::vector<float>& v = (*router.layers)[i].*member;
      v.resize(E);
      f.read(name, {0}, {E}, v.data());
      if (std::isnan(v[0])) v.clear();
    }
}

// The root attributes, the same on every rank.
void write_attributes(H5File& f, const Topology& topo, int64_t adam_step, const CheckpointAttributes& a) {
  f.set_attr("format_version", kCheckpointFormatVersion);
  f.set_attr("iteration", a.iteration);
  f.set_attr("consumed_samples", a.consumed_samples);
  f.set_attr("consumed_tokens", a.consumed_tokens);
  f.set_attr("adam_step", adam_step);
  f.set_attr("seed", int64_t(a.seed));
  f.set_attr("config", a.config.dump());
  f.set_attr("layout", nlohmann::json{{"tp", topo.tp().size},
                                      {"pp", topo.pp().size},
                                      {"dp", topo.dp().size},
                                      {"ep", topo.ep().size},
                                      {"cp", topo.cp().size},
                                      {"world", topo.world_size()}}
                           .dump());
  for (const auto& [key, value] : a.resume.items()) f.set_attr(key, value.dump());
  f.set_attr("moetrain_version", kMoetrainVersion);
  f.set_attr("saved_at", a.saved_at);
  if (a.tokenizer) {
    f.set_attr("tokenizer", a.tokenizer->options_json().dump());
    for (const auto& [role, bytes] : a.tokenizer->files)
      f.write_all("tokenizer/" + role, {bytes.size()}, reinterpret_cast<const uint8_t*>(bytes.data()));
  }
}

}  // namespace

template <typename T>
void write_checkpoint_file(const std::string& file, Topology& topo, const ModelConfig& model,
                           Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                           const CheckpointAttributes& a, MasterWeights<T>* master, const StageRouterState& router) {
  H5File f = H5File::create(file, topo.world_mpi());
  std::vector<float> scratch;
  write_tensors(f, "model", model, params, float32_weights(params, master, scratch), topo);
  write_router_state(f, model, topo, router.layers, router.first_layer);
  // One moment at a time, through one buffer.
  scratch.resize(params.padded_size());
  for (auto [name, shard] : moments(optim)) {
    gather_moment(grad_sync, *shard, scratch);
    write_tensors(f, name, model, params, scratch.data(), topo);
  }
  write_attributes(f, topo, optim.step_count(), a);
  f.close();
}

template <typename T>
void snapshot_checkpoint(Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                         MasterWeights<T>* master, const StageRouterState& router, CheckpointSnapshot& s) {
  s.router = router.layers ? *router.layers : std::vector<RouterState>{};
  s.router_first_layer = router.first_layer;
  // Under bf16 the master weights are gathered straight into the snapshot.
  if (const float* w = float32_weights(params, master, s.weights); w != s.weights.data())
    s.weights.assign(w, w + params.padded_size());
  s.exp_avg.resize(params.padded_size());
  s.exp_avg_sq.resize(params.padded_size());
  gather_moment(grad_sync, optim.exp_avg(), s.exp_avg);
  gather_moment(grad_sync, optim.exp_avg_sq(), s.exp_avg_sq);
  s.adam_step = optim.step_count();
}

template <typename T>
void write_checkpoint_snapshot(const std::string& file, MPI_Comm comm, const Topology& topo, const ModelConfig& model,
                               const Parameters<T>& params, const CheckpointSnapshot& s,
                               const CheckpointAttributes& a) {
  H5File f = H5File::create(file, comm);
  write_tensors(f, "model", model, params, s.weights.data(), topo);
  write_router_state(f, model, topo, s.router.empty() ? nullptr : &s.router, s.router_first_layer);
  write_tensors(f, "optim/exp_avg", model, params, s.exp_avg.data(), topo);
  write_tensors(f, "optim/exp_avg_sq", model, params, s.exp_avg_sq.data(), topo);
  write_attributes(f, topo, s.adam_step, a);
  f.close();
}

std::string checkpoint_problem(const std::string& path) {
  try {
    H5File f = H5File::open(path, MPI_COMM_SELF);
    for (const char* attr : {"format_version", "iteration", "consumed_samples", "adam_step", "config"})
      if (!f.has_attr(attr)) return fmt::format("it has no '{}' attribute", attr);
    if (!f.exists("model/embed") || !f.exists("optim/exp_avg_sq/lm_head"))
      return "it lacks the model or optimizer tensors";
    if (!nlohmann::json::accept(f.attr_string("config"))) return "its 'config' attribute is not JSON";
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

CheckpointInfo read_checkpoint_info(const std::string& path, MPI_Comm comm) {
  H5File f = H5File::open(path, comm);
  auto integer = [&](const char* name) {
    MT_CHECK(f.has_attr(name) && f.attr_kind(name) == H5File::AttrKind::Integer,
             "checkpoint {}: no integer attribute '{}'", path, name);
    const int64_t v = f.attr_int(name);
    MT_CHECK(v >= 0, "checkpoint {}: attribute '{}' is {}, below 0", path, name, v);
    return v;
  };
  auto json = [&](const char* name) {
    MT_CHECK(f.has_attr(name) && f.attr_kind(name) == H5File::AttrKind::String,
             "checkpoint {}: no string attribute '{}'", path, name);
    const std::string text = f.attr_string(name);
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    MT_CHECK(!j.is_discarded(), "checkpoint {}: attribute '{}' is not JSON: {}", path, name, text.substr(0, 80));
    return j;
  };
  const int64_t version = integer("format_version");
  MT_CHECK(version == kCheckpointFormatVersion,
           "checkpoint {} has format version {}, this build reads version {}", path, version,
           kCheckpointFormatVersion);
  CheckpointInfo info;
  info.path = path;
  info.iteration = integer("iteration");
  info.consumed_samples = integer("consumed_samples");
  info.consumed_tokens = integer("consumed_tokens");
  info.adam_step = integer("adam_step");
  MT_CHECK(f.has_attr("seed") && f.attr_kind("seed") == H5File::AttrKind::Integer,
           "checkpoint {}: no integer attribute 'seed'", path);
  info.seed = uint64_t(f.attr_int("seed"));  // any 64-bit pattern
  info.config = json("config");
  MT_CHECK(info.config.is_object() && info.config.contains("model"),
           "checkpoint {}: attribute 'config' has no \"model\" object", path);
  try {
    info.model = model_config_from_json(info.config.at("model"));
  } catch (const Error& e) {
    MT_FAIL("checkpoint {}: attribute 'config': {}", path, e.what());
  }
  if (f.has_attr("skip_guard")) info.skip_guard = json("skip_guard");
  return info;
}

TokenizerSpec read_checkpoint_tokenizer(const std::string& path, MPI_Comm comm) {
  H5File f = H5File::open(path, comm);
  TokenizerSpec spec;
  if (!f.has_attr("tokenizer")) return spec;
  try {
    spec.options = TokenizerSpec::options_from_json(nlohmann::json::parse(f.attr_string("tokenizer")));
  } catch (const std::exception& e) {
    MT_FAIL("checkpoint {}: attribute 'tokenizer': {}", path, e.what());
  }
  for (const std::string& role : f.exists("tokenizer") ? f.list("tokenizer") : std::vector<std::string>{}) {
    const std::vector<uint8_t> bytes = f.read_all<uint8_t>("tokenizer/" + role);
    spec.files[role].assign(bytes.begin(), bytes.end());
  }
  return spec;
}

template <typename T>
void load_checkpoint(const std::string& path, MPI_Comm comm, Parameters<T>& params, AdamW<float>* optim,
                     const GradSync<float>* grad_sync, MasterWeights<T>* master, const StageRouterState& router) {
  H5File f = H5File::open(path, comm);
  const ModelConfig model = model_config_from_json(nlohmann::json::parse(f.attr_string("config")).at("model"));
  read_router_state(f, model, router);
  if constexpr (std::is_same_v<T, float>) {
    read_tensors(f, "model", params, params.values.data());
  } else {
    std::vector<float> weights(params.padded_size(), 0.0f);
    read_tensors(f, "model", params, weights.data());
    if (master) {
      master->set(weights.data());
    } else {
      for (size_t i = 0; i < weights.size(); ++i) params.values.data()[i] = T(weights[i]);
    }
  }
  if (optim) {
    MT_CHECK(grad_sync != nullptr, "loading optimizer state needs its shard layout");
    std::vector<float> moment(params.padded_size(), 0.0f);
    for (auto [name, shard] : moments(*optim)) {
      read_tensors(f, name, params, moment.data());
      grad_sync->flat_to_shard(moment.data(), shard->data());
    }
    optim->set_step_count(f.attr_int("adam_step"));
  }
  // What this load read was checked against its checksums as it came in;
  // the blocks no rank read (or read whole) are checked now.
  f.verify_unread_blocks(optim ? "" : "model/");
}

template void snapshot_checkpoint<float>(Parameters<float>&, AdamW<float>&, GradSync<float>&, MasterWeights<float>*,
                                         const StageRouterState&, CheckpointSnapshot&);
template void snapshot_checkpoint<bf16>(Parameters<bf16>&, AdamW<float>&, GradSync<float>&, MasterWeights<bf16>*,
                                        const StageRouterState&, CheckpointSnapshot&);
template void write_checkpoint_snapshot<float>(const std::string&, MPI_Comm, const Topology&, const ModelConfig&,
                                               const Parameters<float>&, const CheckpointSnapshot&,
                                               const CheckpointAttributes&);
template void write_checkpoint_snapshot<bf16>(const std::string&, MPI_Comm, const Topology&, const ModelConfig&,
                                              const Parameters<bf16>&, const CheckpointSnapshot&,
                                              const CheckpointAttributes&);
template void write_checkpoint_file<float>(const std::string&, Topology&, const ModelConfig&, Parameters<float>&,
                                           AdamW<float>&, GradSync<float>&, const CheckpointAttributes&,
                                           MasterWeights<float>*, const StageRouterState&);
template void write_checkpoint_file<bf16>(const std::string&, Topology&, const ModelConfig&, Parameters<bf16>&,
                                          AdamW<float>&, GradSync<float>&, const CheckpointAttributes&,
                                          MasterWeights<bf16>*, const StageRouterState&);
template void load_checkpoint<float>(const std::string&, MPI_Comm, Parameters<float>&, AdamW<float>*,
                                     const GradSync<float>*, MasterWeights<float>*, const StageRouterState&);
template void load_checkpoint<bf16>(const std::string&, MPI_Comm, Parameters<bf16>&, AdamW<float>*,
                                    const GradSync<float>*, MasterWeights<bf16>*, const StageRouterState&);

}  // namespace mt
