#include <fmt/format.h>

#include "data/prepare_data.h"
#include "launch/commands.h"

namespace mt {

void run_prepare_data(const data::PrepareDataConfig& config) {
  const data::PrepareDataStats s = data::prepare_data(config);
  fmt::print("wrote {}.bin/.idx: {} documents, {} tokens from {} bytes ({} files skipped)\n",
             config.output_prefix, s.documents, s.tokens, s.bytes, s.skipped);
}

}  // namespace mt
