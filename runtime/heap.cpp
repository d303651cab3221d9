#include "runtime/heap.h"

#include <malloc.h>

#include "runtime/check.h"

namespace mt {

void keep_freed_memory_in_heap() {
  // Blocks below the threshold come from the heap (32 MiB: glibc's most);
  // the heap is trimmed back to the kernel only past 1 GiB free at its top.
  MT_CHECK(mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1, "mallopt(M_MMAP_THRESHOLD) failed");
  MT_CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1, "mallopt(M_TRIM_THRESHOLD) failed");
}

}  // namespace mt
