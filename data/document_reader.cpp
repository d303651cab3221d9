#include "data/document_reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/check.h"

namespace fs = std::filesystem;

namespace mt::data {

namespace {

bool is_json_lines(const fs::path& file) {
  const std::string ext = file.extension().string();
  return ext == ".jsonl" || ext == ".json";
}

bool extension_wanted(const fs::path& file, const std::vector<std::string>& extensions) {
  if (extensions.empty()) return true;
  const std::string ext = file.extension().string();  // ".txt", or "" for none
  return std::any_of(extensions.begin(), extensions.end(), [&](const std::string& want) {
    return !want.empty() && (want[0] == '.' ? want == ext : "." + want == ext);
  });
}

// Every regular file under `dir` (symlinks to files included, symlinked
// directories and special files not), sorted so that the order is the same
// whatever order the file system lists them in.
std::vector<fs::path> walk(const fs::path& dir, const std::vector<std::string>& extensions, uint64_t& skipped) {
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
    if (entry.is_regular_file(type_ec)) {  // follows symlinks to files
      files.push_back(entry.path());
    } else {
      ++skipped;  // fifo, socket, device, broken symlink
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The whole file, or false (and why) if it cannot be opened or read.
bool read_file(const fs::path& path, std::string& text, std::string& why) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
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

std::vector<std::string> json_keys(const DocumentInputs& inputs) {
  return inputs.json_keys.empty() ? std::vector<std::string>{"text"} : inputs.json_keys;
}

DocumentReader::DocumentReader(const DocumentInputs& in, const std::vector<fs::path>& exclude) {
  MT_CHECK(!in.inputs.empty(), "no --input files or directories given");
  std::error_code ec;
  std::vector<fs::path> excluded;
  for (const fs::path& p : exclude) excluded.push_back(fs::weakly_canonical(p, ec));
  auto add = [&](fs::path path, bool named) {
    if (std::find(excluded.begin(), excluded.end(), fs::weakly_canonical(path, ec)) == excluded.end())
      files_.push_back({std::move(path), named});
  };
  for (const std::string& input : in.inputs) {
    const fs::path path(input);
    MT_CHECK(fs::exists(path, ec), "--input {} does not exist", input);
    if (fs::is_directory(path, ec)) {  // a named directory is walked even if it is a symlink
      for (fs::path& found : walk(path, in.extensions, files_skipped_)) add(std::move(found), false);
    } else {
      // A file named on the command line is taken whatever its extension.
      MT_CHECK(fs::is_regular_file(path, ec), "--input {} is not a regular file or directory", input);
      add(path, true);
    }
  }
  const auto json = std::find_if(files_.begin(), files_.end(), [](const Input& f) { return is_json_lines(f.path); });
  const auto text = std::find_if(files_.begin(), files_.end(), [](const Input& f) { return !is_json_lines(f.path); });
  MT_CHECK(json == files_.end() || text == files_.end(),
           "--input mixes JSON lines ({}) and text files ({}): JSON lines go to one store a --json-keys key, text "
           "to one store; prepare them in two runs",
           json->path.string(), text->path.string());
  json_lines_ = json != files_.end();
  if (json_lines_) {
    keys_ = json_keys(in);
  } else {
    MT_CHECK(in.json_keys.empty(), "--json-keys {} applies to JSON lines (*.jsonl, *.json), and no input is one",
             fmt::join(in.json_keys, " "));
    keys_ = {""};
  }
}

DocumentReader::~DocumentReader() { std::free(line_buffer_); }

bool DocumentReader::next(Document& doc) { return json_lines_ ? next_json_line(doc) : next_text(doc); }

bool DocumentReader::next_text(Document& doc) {
  doc.texts.resize(1);
  std::string why;
  while (next_file_ < files_.size()) {
    const Input& file = files_[next_file_++];
    if (!read_file(file.path, doc.texts[0], why)) {
      MT_CHECK(!file.named, "cannot read --input {}: {}", file.path.string(), why);
      ++files_skipped_;
      continue;
    }
    bytes_read_ += doc.texts[0].size();
    doc.where = file.path.string();
    return true;
  }
  return false;
}

bool DocumentReader::next_json_line(Document& doc) {
  for (;;) {
    if (!open_) {
      if (next_file_ == files_.size()) return false;
      const Input& file = files_[next_file_++];
      open_.reset(std::fopen(file.path.c_str(), "rb"));
      if (!open_) {
        MT_CHECK(!file.named, "cannot read --input {}: {}", file.path.string(), std::strerror(errno));
        ++files_skipped_;
        continue;
      }
      line_ = 0;
    }
    const std::string& path = files_[next_file_ - 1].path.string();
    const ssize_t n = ::getline(&line_buffer_, &line_capacity_, open_.get());
    if (n < 0) {
      MT_CHECK(!std::ferror(open_.get()), "cannot read --input {}: {}", path, std::strerror(errno));
      open_.reset();
      continue;
    }
    ++line_;
    bytes_read_ += uint64_t(n);
    const std::string_view line(line_buffer_, size_t(n));
    if (line.find_first_not_of(" \t\r\n") == std::string_view::npos) continue;  // blank
    doc.where = fmt::format("{}:{}", path, line_);
    doc.json_line.assign(line);
    doc.texts.clear();
    return true;
  }
}

void DocumentReader::parse(Document& doc) const {
  if (!json_lines_) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(doc.json_line);
  } catch (const nlohmann::json::parse_error& e) {
    MT_FAIL("{}: not a JSON line ({})", doc.where, e.what());
  }
  MT_CHECK(j.is_object(), "{}: the line is JSON but not an object", doc.where);
  doc.texts.resize(keys_.size());
  for (size_t k = 0; k < keys_.size(); ++k) {
    const auto value = j.find(keys_[k]);
    MT_CHECK(value != j.end(), "{}: no key \"{}\" (--json-keys)", doc.where, keys_[k]);
    MT_CHECK(value->is_string(), "{}: key \"{}\" is {}, not a string", doc.where, keys_[k], value->type_name());
    doc.texts[k] = value->get_ref<const std::string&>();
  }
  doc.json_line.clear();
}

}  // namespace mt::data
