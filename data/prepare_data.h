// `moetrain prepare-data`: raw text files -> one token store, written with the
// byte tokenizer (docs/design.md section 5). Each file is one document: its bytes,
// then the end-of-document token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace mt::data {

struct PrepareDataConfig {
  // Files and directories; directories are walked recursively in sorted path
  // order (symlinked directories not followed), so the store is deterministic.
  std::vector<std::string> inputs;
  std::string output_prefix;            // writes OUTPUT_PREFIX.bin / .idx
  std::vector<std::string> extensions;  // "txt" or ".txt"; empty = every file
  TokenizerOptions tokenizer;
};

struct PrepareDataStats {
  uint64_t documents = 0;  // files stored
  uint64_t tokens = 0;     // tokens stored, end-of-document tokens included
  uint64_t bytes = 0;      // bytes of text read
  uint64_t skipped = 0;    // files found in directories but unreadable or special
};

// Throws for a missing input, an output directory that does not exist, or no
// documents at all. Empty files are skipped (not counted in `skipped`).
PrepareDataStats prepare_data(const PrepareDataConfig& config);

}  // namespace mt::data
