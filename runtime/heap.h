// How the process keeps the memory it frees.
#pragma once

namespace mt {

// Keeps freed blocks (up to glibc's 32 MiB mmap limit) in the heap instead
// of returning them to the kernel. oneDNN allocates a scratch buffer for
// each product on the thread that runs it and frees it after: returned to
// the kernel, it page-faults back in on the next product, which cost a
// third of the bf16 bench step once both threads ran products (grouped
// expert products). A training process holds its peak memory anyway, as
// PyTorch's caching allocators do. Call once, before anything allocates.
void keep_freed_memory_in_heap();

}  // namespace mt
