#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>

#include "data/prepare_data.h"
#include "launch/commands.h"

namespace mt {

namespace {

std::string rates(const data::PrepareDataStats& s) {
  const double t = s.seconds > 0 ? s.seconds : 1e-9;
  return fmt::format("{:.1f} MB in {:.1f} s: {:.2f} MB/s, {:.0f} documents/s, {:.0f} tokens/s", s.bytes / 1e6,
                     s.seconds, s.bytes / 1e6 / t, s.documents / t, s.tokens / t);
}

}  // namespace

void run_prepare_data(const data::PrepareDataConfig& config) {
  const data::PrepareDataStats s = data::prepare_data(config, [](const data::PrepareDataStats& p) {
    fmt::print("prepare-data: {} documents, {}\n", p.documents, rates(p));
    std::fflush(stdout);
  });
  fmt::print("wrote {} (.bin/.idx): {} documents, {} tokens ({} empty documents left out, {} files skipped); {}\n",
             fmt::join(s.stores, ", "), s.documents, s.tokens, s.empty, s.skipped, rates(s));
}

}  // namespace mt
