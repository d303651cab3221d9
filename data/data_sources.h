// The training data's sources: a name, a token store and how many epochs of
// it the run sees (docs/design.md section 5). On the command line:
//   --data-path text=PREFIX code=PREFIX --data-epochs text=2 code=4
// or a bare --data-path PREFIX: one source, repeated as often as the run needs.
#pragma once

#include <string>
#include <vector>

namespace mt::data {

struct SourceSpec {
  std::string name;
  std::string prefix;
  double epochs = 0.0;  // 0: as often as the run needs (a single source only)
};

// Throws naming the entry at fault: a malformed or duplicated name, an epoch
// count for an unknown source, epochs that are not positive, several sources
// without epoch counts.
std::vector<SourceSpec> parse_sources(const std::vector<std::string>& data_path,
                                      const std::vector<std::string>& data_epochs);

}  // namespace mt::data
