// libFuzzer target: the .idx/.bin token store reader (data/indexed_dataset.h)
// on arbitrary files. Input: 2 bytes (little endian) giving the .idx's
// length, the .idx, then the .bin. A store either opens and reads within its
// bounds, or fails with mt::Error naming the file; anything else (another
// exception, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "data/indexed_dataset.h"
#include "fuzz_files.h"
#include "runtime/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t idx_bytes = std::min<size_t>(size - 2, size_t(data[0]) | size_t(data[1]) << 8);
  const std::string prefix = mt::fuzz::scratch_path("store");
  mt::fuzz::write_file(mt::data::idx_path(prefix), data + 2, idx_bytes);
  mt::fuzz::write_file(mt::data::bin_path(prefix), data + 2 + idx_bytes, size - 2 - idx_bytes);
  try {
    const mt::data::IndexedDataset store(prefix);
    // What training reads: the first and last tokens of the stream, and
    // every id checked against a byte vocabulary.
    int32_t tokens[64];
    const uint64_t n = std::min<uint64_t>(64, store.num_tokens());
    store.read_tokens(0, n, tokens);
    store.read_tokens(store.num_tokens() - n, n, tokens);
    store.check_token_range(256);
  } catch (const mt::Error&) {
    // a clear error: what a bad store must give
  }
  return 0;
}
