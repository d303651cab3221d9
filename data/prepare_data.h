// `moetrain prepare-data`: text (files, directories, JSON lines) -> token
// stores in Megatron's indexed format, tokenized by --tokenizer-type
// (docs/data.md). Text inputs make one store, PREFIX.bin/.idx; JSON lines
// make one store a --json-keys key, PREFIX_KEY_document.bin/.idx, as
// Megatron's preprocess_data.py names them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/document_reader.h"
#include "tokenizer/tokenizer.h"

namespace mt::data {

struct PrepareDataConfig {
  DocumentInputs inputs;
  std::string output_prefix;
  TokenizerOptions tokenizer;
  bool append_eod = true;  // the tokenizer's end-of-document id after each document
  int workers = 1;         // threads tokenizing; the output is the same for any count
};

struct PrepareDataStats {
  uint64_t documents = 0;  // documents stored (of all keys)
  uint64_t empty = 0;      // documents with no tokens, left out
  uint64_t tokens = 0;     // tokens stored, end-of-document tokens included
  uint64_t bytes = 0;      // bytes of input read
  uint64_t skipped = 0;    // files found in directories but unreadable or special
  double seconds = 0;      // since the start
  std::vector<std::string> stores;  // the prefixes written
};

// Writes the stores, calling `progress` about once a second. Throws for a
// missing input or output directory, a bad input (naming the file and line),
// or no documents at all; then no store is written (each appears, renamed
// from a temporary file, only once complete).
PrepareDataStats prepare_data(const PrepareDataConfig& config,
                              const std::function<void(const PrepareDataStats&)>& progress = {});

}  // namespace mt::data
