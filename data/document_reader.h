// The documents of `moetrain prepare-data` and `moetrain train-tokenizer`
// (docs/data.md): files and directories of text, one document a file, and
// JSON lines (Megatron-LM's preprocess_data.py input), one document a line
// and key.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace mt::data {

struct DocumentInputs {
  // Files and directories; directories are walked recursively in sorted path
  // order (symlinked directories not followed), so the order is
  // deterministic. A file named *.jsonl or *.json is JSON lines.
  std::vector<std::string> inputs;
  std::vector<std::string> extensions;  // "txt" or ".txt"; empty = every file (directories only)
  // The keys of each JSON line whose strings are documents (--json-keys);
  // empty: "text", Megatron's default.
  std::vector<std::string> json_keys;
};

// The keys of JSON lines: --json-keys, or Megatron's default "text".
std::vector<std::string> json_keys(const DocumentInputs& inputs);

// One document of each key: `texts[k]` belongs to keys()[k] (a text file
// has one key, its whole bytes). A JSON line comes unparsed, in
// `json_line`, until parse(): prepare-data's workers parse their own.
struct Document {
  std::vector<std::string> texts;
  std::string json_line;
  std::string where;  // "path" or "path:line", for messages
};

class DocumentReader {
 public:
  // Lists every input file now (so that files written later, such as the
  // caller's own output, are never read); paths in `exclude` are left out.
  // Throws for a missing input, inputs that mix JSON lines and text, or
  // --json-keys given without JSON lines.
  DocumentReader(const DocumentInputs& inputs, const std::vector<std::filesystem::path>& exclude = {});
  ~DocumentReader();

  // Whether the inputs are JSON lines (one store a key) or text (one store).
  bool json_lines() const { return json_lines_; }
  // The keys: --json-keys for JSON lines, {""} for text.
  const std::vector<std::string>& keys() const { return keys_; }

  // The next document, or false at the end; blank lines of JSON lines are
  // skipped. A text file named on the command line that cannot be read
  // throws; one found in a directory is skipped and counted.
  bool next(Document& doc);
  // Fills doc.texts from doc.json_line (nothing for a text file). A line
  // that is not a JSON object, lacks a key, holds a key that is not a
  // string, or is not UTF-8 throws naming the file and line. Thread-safe.
  void parse(Document& doc) const;

  uint64_t bytes_read() const { return bytes_read_; }      // of the input files so far
  uint64_t files_skipped() const { return files_skipped_; }  // unreadable or special files in directories
  uint64_t files() const { return files_.size(); }

 private:
  struct Input {
    std::filesystem::path path;
    bool named;  // given on the command line: failing to read it is an error
  };
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  bool next_text(Document& doc);
  bool next_json_line(Document& doc);

  std::vector<Input> files_;
  std::vector<std::string> keys_;
  bool json_lines_ = false;
  size_t next_file_ = 0;
  std::unique_ptr<std::FILE, FileCloser> open_;  // the JSON-lines file being read
  uint64_t line_ = 0;
  char* line_buffer_ = nullptr;  // getline's
  size_t line_capacity_ = 0;
  uint64_t bytes_read_ = 0;
  uint64_t files_skipped_ = 0;
};

}  // namespace mt::data
