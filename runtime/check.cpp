#include "runtime/check.h"

#include <hdf5.h>

#include <string_view>
#include <vector>

namespace mt {

namespace {
int g_error_rank = 0;
}

void set_error_rank(int rank) { g_error_rank = rank; }
int error_rank() { return g_error_rank; }

void throw_error(const char* file, int line, const std::string& msg) {
  std::string_view path(file);
  std::string_view root(MT_SOURCE_ROOT);
  if (path.substr(0, root.size()) == root) path.remove_prefix(root.size());
  throw Error(fmt::format("[rank {}] {}:{}: {}", g_error_rank, path, line, msg));
}

std::string hdf5_error_detail() {
  std::vector<std::string> causes;
  auto collect = [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
    auto& list = *static_cast<std::vector<std::string>*>(out);
    if (e->desc && *e->desc && (list.empty() || list.back() != e->desc)) list.emplace_back(e->desc);
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &causes);
  H5Eclear2(H5E_DEFAULT);
  if (causes.empty()) return "";
  // Downward: the outermost call first; the innermost (the real cause) last.
  std::string out = " (HDF5: " + causes.back();
  if (causes.size() > 1) out += "; in " + causes.front();
  return out + ")";
}

}  // namespace mt
