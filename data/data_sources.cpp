#include "data/data_sources.h"

#include <cmath>
#include <cstdlib>

#include "runtime/check.h"

namespace mt::data {

namespace {

bool valid_name(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

}  // namespace

std::vector<SourceSpec> parse_sources(const std::vector<std::string>& data_path,
                                      const std::vector<std::string>& data_epochs) {
  MT_CHECK(!data_path.empty(), "--data-path is required: PREFIX, or NAME=PREFIX for each source");
  std::vector<SourceSpec> sources;
  for (const std::string& entry : data_path) {
    const size_t eq = entry.find('=');
    SourceSpec s;
    if (eq == std::string::npos) {
      MT_CHECK(data_path.size() == 1,
               "--data-path '{}': with several sources, name each one as NAME=PREFIX", entry);
      s.name = "data";
      s.prefix = entry;
    } else {
      s.name = entry.substr(0, eq);
      s.prefix = entry.substr(eq + 1);
      MT_CHECK(valid_name(s.name),
               "--data-path '{}': a source name is letters, digits, '_', '-' or '.'", entry);
      MT_CHECK(!s.prefix.empty(), "--data-path '{}': no store prefix after '='", entry);
    }
    for (const SourceSpec& other : sources)
      MT_CHECK(other.name != s.name, "--data-path: source name '{}' is given twice", s.name);
    sources.push_back(s);
  }
  for (const std::string& entry : data_epochs) {
    const size_t eq = entry.find('=');
    MT_CHECK(eq != std::string::npos, "--data-epochs '{}': expected NAME=EPOCHS", entry);
    const std::string name = entry.substr(0, eq), value = entry.substr(eq + 1);
    SourceSpec* source = nullptr;
    for (SourceSpec& s : sources)
      if (s.name == name) source = &s;
    MT_CHECK(source != nullptr, "--data-epochs '{}': no source named '{}' in --data-path", entry, name);
    MT_CHECK(source->epochs == 0.0, "--data-epochs: source '{}' is given twice", name);
    char* end = nullptr;
    const double epochs = std::strtod(value.c_str(), &end);
    MT_CHECK(!value.empty() && end && *end == '\0' && std::isfinite(epochs),
             "--data-epochs '{}': '{}' is not a number", entry, value);
    MT_CHECK(epochs > 0, "--data-epochs '{}': epochs must be positive", entry);
    source->epochs = epochs;
  }
  if (sources.size() > 1)
    for (const SourceSpec& s : sources)
      MT_CHECK(s.epochs > 0,
               "source '{}' has no epoch count: with several sources, give each one in "
               "--data-epochs NAME=EPOCHS (sources are blended in proportion to their epochs x size)",
               s.name);
  return sources;
}

}  // namespace mt::data
