#include "data/prepare_data.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fmt/ranges.h>

#include "tokenizer/byte_tokenizer.h"
#include "data/indexed_dataset.h"
#include "runtime/check.h"

namespace fs = std::filesystem;

namespace mt::data {

namespace {

bool extension_wanted(const fs::path& file, const std::vector<std::string>& extensions) {
  if (extensions.empty()) return true;
  const std::string ext = file.extension().string();  // ".txt", or "" for none
  return std::any_of(extensions.begin(), extensions.end(), [&](const std::string& want) {
    return !want.empty() && (want[0] == '.' ? want == ext : "." + want == ext);
  });
}

// Every regular file under `dir` (symlinks to files included, symlinked
// directories and special files not), sorted so that the output is the same
// whatever order the file system lists them in.
std::vector<fs::path> walk(const fs::path& dir, const std::vector<std::string>& extensions,
                           uint64_t& skipped) {
  std::vector<fs::path> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  MT_CHECK(!ec, "cannot read directory {}: {}", dir.string(), ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    MT_CHECK(!ec, "cannot walk directory {}: {}", dir.string(), ec.message());
    const fs::directory_entry& entry = *it;
    std::error_code type_ec;
    if (entry.is_directory(type_ec)) continue;  // walked into unless a symlink
    if (!extension_wanted(entry.path(), extensions)) continue;
    if (entry.is_regular_file(type_ec)) {       // follows symlinks to files
      files.push_back(entry.path());
    } else {
      ++skipped;  // fifo, socket, device, broken symlink
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// The whole file, or false if it cannot be opened or read.
bool read_file(const fs::path& path, std::string& text, std::string& why) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    why = std::strerror(errno);
    return false;
  }
  text.clear();
  char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f.get())) > 0) text.append(chunk, n);
  if (std::ferror(f.get())) {
    why = std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

PrepareDataStats prepare_data(const PrepareDataConfig& config) {
  MT_CHECK(!config.inputs.empty(), "prepare-data: no input files or directories given");
  MT_CHECK(!config.output_prefix.empty(), "prepare-data: no output prefix given");
  const fs::path out_dir = fs::path(config.output_prefix).parent_path();
  std::error_code ec;
  MT_CHECK(out_dir.empty() || fs::is_directory(out_dir, ec),
           "prepare-data: output directory {} (of output prefix {}) does not exist", out_dir.string(),
           config.output_prefix);

  // Collect every file before writing, so our own output is never an input.
  PrepareDataStats stats;
  struct Input {
    fs::path path;
    bool named;  // given on the command line: failing to read it is an error
  };
  std::vector<Input> files;
  for (const std::string& input : config.inputs) {
    const fs::path path(input);
    MT_CHECK(fs::exists(path, ec), "prepare-data: input {} does not exist", input);
    if (fs::is_directory(path, ec)) {  // a named directory is walked even if it is a symlink
      for (fs::path& found : walk(path, config.extensions, stats.skipped))
        files.push_back({std::move(found), false});
    } else {
      // A file named on the command line is taken whatever its extension.
      MT_CHECK(fs::is_regular_file(path, ec), "prepare-data: input {} is not a regular file or directory",
               input);
      files.push_back({path, true});
    }
  }
  // A rerun into a folder it reads must not swallow the previous output.
  const fs::path old_bin = fs::weakly_canonical(bin_path(config.output_prefix), ec);
  const fs::path old_idx = fs::weakly_canonical(idx_path(config.output_prefix), ec);

  IndexedDatasetWriter writer(config.output_prefix, best_dtype_for_vocab(ByteTokenizer::kVocabSize));
  std::string text;
  std::string why;
  for (const auto& [file, named] : files) {
    const fs::path canon = fs::weakly_canonical(file, ec);
    if (canon == old_bin || canon == old_idx) continue;
    if (!read_file(file, text, why)) {
      MT_CHECK(!named, "prepare-data: cannot read input {}: {}", file.string(), why);
      ++stats.skipped;
      continue;
    }
    if (text.empty()) continue;
    std::vector<int32_t> tokens = ByteTokenizer().encode(text);
    tokens.push_back(ByteTokenizer::kEod);
    writer.add_document(tokens);
    stats.documents += 1;
    stats.tokens += tokens.size();
    stats.bytes += text.size();
  }
  MT_CHECK(stats.documents > 0, "prepare-data: no documents found in {} (extensions: {}; {} files skipped)",
           fmt::join(config.inputs, ", "),
           config.extensions.empty() ? std::string("any") : fmt::format("{}", fmt::join(config.extensions, ", ")),
           stats.skipped);
  writer.finalize();
  return stats;
}

}  // namespace mt::data
