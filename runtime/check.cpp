#include "runtime/check.h"

#include <string_view>

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

}  // namespace mt
