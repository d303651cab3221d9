// Where checkpoints live and which one to load: SAVE/iter_NNNNNNN/checkpoint.h5
// (the file is checkpoint_file.h's) and SAVE/latest naming the newest
// complete one. A checkpoint is written into SAVE/iter_NNNNNNN.tmp and
// renamed into place once complete, and `latest` is replaced by rename
// after that, so a crash never leaves a half checkpoint under a real name.
// --keep-last removes older ones only after a newer one is complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/topology.h"

namespace mt {

std::string checkpoint_dir_name(int64_t iteration);  // "iter_0000042"

// Bytes a checkpoint of this model takes: the float32 weights and both Adam
// moments of every parameter, and a margin for HDF5's metadata.
uint64_t checkpoint_size_estimate(const ModelConfig& model);

// Why --save DIR cannot take a checkpoint of `bytes` (it cannot be created
// or written, or its file system has too little room), or "". Creates DIR.
std::string save_dir_problem(const std::string& save_dir, uint64_t bytes);

// One save of iteration `iteration` into save_dir, from begin_save to
// publish_save.
struct PendingSave {
  std::string save_dir;
  int64_t iteration = 0;
  std::filesystem::path tmp_dir;  // SAVE/iter_NNNNNNN.tmp
  std::string saved_at;           // the time stamp every rank writes (rank 0's clock)
  std::string file() const { return (tmp_dir / "checkpoint.h5").string(); }
};

// Collective over topo's world: rank 0 makes SAVE/iter_N.tmp anew.
PendingSave begin_save(const std::string& save_dir, int64_t iteration, Topology& topo);

// Runs `write` (the file's collective write); a failure removes the
// unfinished directory, so nothing half-written keeps a checkpoint's name
// (`latest` has not moved), and says so when the disk is full.
void write_or_clean_up(const PendingSave& save, const ModelConfig& model, const std::function<void()>& write);

// On rank 0 once every rank has written: only a complete file on disk gets
// the real name, only then does `latest` move, and with keep_last > 0 the
// checkpoints beyond the newest keep_last go only after that. Returns the
// file's bytes.
uint64_t publish_save(const PendingSave& save, int keep_last);

// The checkpoint file a --load argument means: a checkpoint.h5, an
// iter_NNNNNNN directory, or a save directory. In a save directory, the
// newest complete checkpoint: the one `latest` names or, when that file is
// truncated or corrupted, the newest readable one before it; a checkpoint
// newer than `latest` (its save did not finish) is skipped. Each skip is
// described in *warnings. Throws naming what is missing. Reads files; call
// it on one rank and share the answer. The checkpoints in `damaged` (found
// so while loading) are passed over too.
std::string resolve_checkpoint(const std::string& load, std::vector<std::string>* warnings = nullptr,
                               const std::vector<std::string>& damaged = {});

// Collective: rank 0 of `world` resolves --load and prints a warning for
// each checkpoint it skipped; every rank gets the path.
std::string resolve_checkpoint(const std::string& load, Communicator& world,
                               const std::vector<std::string>& damaged = {});

// Collective: calls load_path on every rank with the checkpoint --load
// names and returns its path. When loading finds it damaged (DamagedFile: a
// block that does not match its checksum), a checkpoint named directly is
// refused with an error naming the damage; in a save directory the damage
// is reported and the newest intact checkpoint before it loaded instead.
std::string load_newest_intact(const std::string& load, Communicator& world,
                               const std::function<void(const std::string& path)>& load_path);

}  // namespace mt
