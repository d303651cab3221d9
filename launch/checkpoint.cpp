#include "launch/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <array>
#include <ctime>
#include <fstream>
#include <regex>

#include "launch/version.h"
#include "runtime/check.h"
#include "runtime/hdf5_file.h"

namespace fs = std::filesystem;

namespace mt {

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
  f("rope_theta", c.rope_theta);
  f("norm_eps", c.norm_eps);
}

}  // namespace

nlohmann::json model_config_to_json(const ModelConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  for_each_model_field(c, [&](const char* key, const auto& field) { j[key] = field; });
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  for_each_model_field(c, [&](const char* key, auto& field) {
    MT_CHECK(j.contains(key), "checkpoint config has no '{}'", key);
    field = j.at(key).get<std::decay_t<decltype(field)>>();
  });
  return c;
}

std::string checkpoint_dir_name(int64_t iteration) { return fmt::format("iter_{:07d}", iteration); }

namespace {

std::vector<uint64_t> dims(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// One flat float buffer (weights or a moment) as its named tensors. Writes
// are collective, so every rank takes part in every tensor of the model:
// where it holds the tensor, with its share of the block's leading rows
// (the data-parallel replicas hold the same block and split it; a tensor
// every TP rank holds whole is written by TP rank 0's replicas); with
// nothing where another stage does.
void write_tensors(H5File& f, const std::string& group, const ModelConfig& model,
                   const Parameters<float>& p, const float* flat, const Coords& at, const Topology& topo) {
  for (const ParamTensor& logical : param_table(model, at.tp, topo.tp_size())) {
    const ParamTensor* t = p.find_or_null(logical.name);
    std::vector<uint64_t> offset = dims(logical.block.offset), count = dims(logical.block.count);
    const float* data = flat;
    if (!t || (t->replicated() && at.tp != 0)) {
      std::fill(count.begin(), count.end(), 0);
    } else {
      const uint64_t rows = count[0], row_elems = t->numel / rows;
      const uint64_t first = rows * at.dp / topo.dp_size(), end = rows * (at.dp + 1) / topo.dp_size();
      offset[0] += first;
      count[0] = end - first;
      data = flat + t->offset + first * row_elems;
    }
    f.write(group + "/" + logical.name, dims(logical.shape), offset, count, data);
  }
}

void read_tensors(const H5File& f, const std::string& group, const Parameters<float>& p,
                  float* flat) {
  for (const ParamTensor& t : p.tensors) {
    const std::string name = group + "/" + t.name;
    MT_CHECK(f.exists(name), "checkpoint {} has no tensor '{}'", f.path(), name);
    const std::vector<uint64_t> stored = f.shape(name), expected = dims(t.shape);
    MT_CHECK(stored == expected, "checkpoint {}: tensor '{}' has shape [{}], the model expects [{}]",
             f.path(), name, fmt::join(stored, ", "), fmt::join(expected, ", "));
    f.read(name, dims(t.block.offset), dims(t.block.count), flat + t.offset);
  }
}

// Forces a file's (or a directory's entries') data to disk, so that what a
// rename publishes survives a crash of the machine too.
void sync_to_disk(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MT_CHECK(fd >= 0, "cannot open {} to sync it: {}", path.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  MT_CHECK(rc == 0, "cannot sync {} to disk: {}", path.string(), std::strerror(errno));
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text << "\n";
    out.flush();
    MT_CHECK(out.good(), "cannot write {}", tmp.string());
  }
  sync_to_disk(tmp);
  fs::rename(tmp, path);
  sync_to_disk(path.parent_path());
}

// The AdamW moments (shard-packed) under their checkpoint groups.
std::array<std::pair<const char*, DeviceBuffer<float>*>, 2> moments(AdamW<float>& optim) {
  return {{{"optim/exp_avg", &optim.exp_avg()}, {"optim/exp_avg_sq", &optim.exp_avg_sq()}}};
}

// The iterations of the complete checkpoint directories in save_dir
// (iter_NNNNNNN, not .tmp or .old), newest first.
std::vector<int64_t> checkpoint_iterations(const fs::path& save_dir) {
  std::vector<int64_t> found;
  const std::regex name("iter_(\\d{7})");
  std::smatch m;
  for (const auto& entry : fs::directory_iterator(save_dir)) {
    const std::string dir = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(dir, m, name)) found.push_back(std::stoll(m[1]));
  }
  std::sort(found.rbegin(), found.rend());
  return found;
}

// Keeps the newest keep_last checkpoints up to `newest` (the one just
// saved). Directories beyond it (an unfinished save of an earlier attempt)
// are neither counted nor removed: they never displace a complete one.
void remove_old_checkpoints(const fs::path& save_dir, int64_t newest, int keep_last) {
  int kept = 0;
  for (int64_t iteration : checkpoint_iterations(save_dir))
    if (iteration <= newest && ++kept > keep_last) fs::remove_all(save_dir / checkpoint_dir_name(iteration));
}

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

SaveStats save_checkpoint(const std::string& save_dir, Topology& topo, const ModelConfig& model,
                          Parameters<float>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                          const TrainState& state, uint64_t seed, const nlohmann::json& config,
                          const nlohmann::json& resume, int keep_last) {
  const double start = MPI_Wtime();
  const fs::path final_dir = fs::path(save_dir) / checkpoint_dir_name(state.iteration);
  const fs::path tmp_dir = final_dir.string() + ".tmp";
  const bool root = topo.world_rank() == 0;
  if (root) {
    std::error_code ec;
    fs::create_directories(save_dir, ec);
    MT_CHECK(!ec, "cannot create checkpoint directory {}: {}", save_dir, ec.message());
    fs::remove_all(tmp_dir);
    fs::create_directories(tmp_dir, ec);
    MT_CHECK(!ec, "cannot create {}: {}", tmp_dir.string(), ec.message());
  }
  topo.world().barrier();

  // Attributes must be the same on every rank: rank 0's clock decides.
  std::string saved_at = root ? now_iso8601() : std::string();
  topo.world().broadcast(saved_at, 0);

  MPI_Comm comm = static_cast<MpiCommunicator&>(topo.world()).comm();
  H5File f = H5File::create((tmp_dir / "checkpoint.h5").string(), comm);
  write_tensors(f, "model", model, params, params.values.data(), topo.coords(), topo);
  // Each moment, gathered from the replicas' shards into the flat layout.
  std::vector<float> moment(params.padded_size());
  for (auto [name, shard] : moments(optim)) {
    grad_sync.shard_to_flat(shard->data(), moment.data());
    grad_sync.all_gather(moment.data());
    write_tensors(f, name, model, params, moment.data(), topo.coords(), topo);
  }
  f.set_attr("format_version", kCheckpointFormatVersion);
  f.set_attr("iteration", state.iteration);
  f.set_attr("consumed_samples", state.consumed_samples);
  f.set_attr("consumed_tokens", state.consumed_tokens);
  f.set_attr("adam_step", optim.step_count());
  f.set_attr("seed", int64_t(seed));
  f.set_attr("config", config.dump());
  f.set_attr("layout", nlohmann::json{{"tp", topo.tp_size()},
                                      {"pp", topo.pp_size()},
                                      {"dp", topo.dp_size()},
                                      {"world", topo.world_size()}}
                           .dump());
  for (const auto& [key, value] : resume.items()) f.set_attr(key, value.dump());
  f.set_attr("moetrain_version", kMoetrainVersion);
  f.set_attr("saved_at", saved_at);
  f.close();
  topo.world().barrier();

  // Only a complete file on disk gets the real name, and only then does
  // `latest` move; older checkpoints go only after that.
  SaveStats stats;
  if (root) {
    sync_to_disk(tmp_dir / "checkpoint.h5");
    sync_to_disk(tmp_dir);
    stats.bytes = fs::file_size(tmp_dir / "checkpoint.h5");
    const fs::path old_dir = final_dir.string() + ".old";
    fs::remove_all(old_dir);
    if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
    fs::rename(tmp_dir, final_dir);
    write_text_atomically(fs::path(save_dir) / "latest", std::to_string(state.iteration));
    fs::remove_all(old_dir);
    if (keep_last > 0) remove_old_checkpoints(save_dir, state.iteration, keep_last);
  }
  topo.world().barrier();
  stats.seconds = MPI_Wtime() - start;
  return stats;
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

std::string resolve_checkpoint(const std::string& load, std::vector<std::string>* warnings) {
  const fs::path p(load);
  MT_CHECK(fs::exists(p), "checkpoint {}: no such file or directory", load);
  if (fs::is_regular_file(p)) return p.string();
  if (fs::exists(p / "checkpoint.h5")) return (p / "checkpoint.h5").string();
  const fs::path latest = p / "latest";
  MT_CHECK(fs::exists(latest), "checkpoint {}: neither a checkpoint.h5 nor a 'latest' file in it", load);
  std::ifstream in(latest);
  int64_t newest = -1;
  in >> newest;
  MT_CHECK(in && newest >= 0, "checkpoint {}: cannot read an iteration from {}", load, latest.string());
  auto warn = [&](std::string w) {
    if (warnings) warnings->push_back(std::move(w));
  };
  for (int64_t iteration : checkpoint_iterations(p)) {
    const fs::path file = p / checkpoint_dir_name(iteration) / "checkpoint.h5";
    if (iteration > newest) {
      warn(fmt::format("{} is newer than 'latest' ({}): its save did not finish; not used", file.string(), newest));
      continue;
    }
    const std::string problem = fs::exists(file) ? checkpoint_problem(file.string()) : "it is missing";
    if (problem.empty()) return file.string();
    warn(fmt::format("{} cannot be resumed from ({}); trying the one before it", file.string(), problem));
  }
  MT_FAIL("checkpoint {}: no complete checkpoint at or before iteration {} ('latest')", load, newest);
}

std::string resolve_checkpoint(const std::string& load, Communicator& world) {
  std::string path;
  if (world.rank() == 0) {
    std::vector<std::string> warnings;
    path = resolve_checkpoint(load, &warnings);
    for (const std::string& w : warnings) fmt::print("warning: {}\n", w);
    std::fflush(stdout);
  }
  world.broadcast(path, 0);
  return path;
}

CheckpointInfo read_checkpoint_info(const std::string& path, MPI_Comm comm) {
  H5File f = H5File::open(path, comm);
  const int64_t version = f.attr_int("format_version");
  MT_CHECK(version == kCheckpointFormatVersion,
           "checkpoint {} has format version {}, this build reads version {}", path, version,
           kCheckpointFormatVersion);
  CheckpointInfo info;
  info.path = path;
  info.state.iteration = f.attr_int("iteration");
  info.state.consumed_samples = f.attr_int("consumed_samples");
  info.state.consumed_tokens = f.attr_int("consumed_tokens");
  info.adam_step = f.attr_int("adam_step");
  info.seed = uint64_t(f.attr_int("seed"));
  info.config = nlohmann::json::parse(f.attr_string("config"));
  return info;
}

void load_checkpoint(const std::string& path, MPI_Comm comm, Parameters<float>& params,
                     AdamW<float>* optim, const GradSync<float>* grad_sync) {
  H5File f = H5File::open(path, comm);
  read_tensors(f, "model", params, params.values.data());
  if (optim) {
    MT_CHECK(grad_sync != nullptr, "loading optimizer state needs its shard layout");
    std::vector<float> moment(params.padded_size(), 0.0f);
    for (auto [name, shard] : moments(*optim)) {
      read_tensors(f, name, params, moment.data());
      grad_sync->flat_to_shard(moment.data(), shard->data());
    }
    optim->set_step_count(f.attr_int("adam_step"));
  }
}

}  // namespace mt
