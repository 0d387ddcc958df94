// CPU storage is 64-byte aligned host memory; CUDA storage comes from the caching allocator.
#include "core/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/cuda_runtime.h"
#include "core/error.h"

namespace s6 {

namespace {
std::atomic<bool> g_poison_freed_host{false};
}  // namespace

void set_poison_freed_host_memory(bool on) { g_poison_freed_host.store(on, std::memory_order_relaxed); }

Storage::Storage(int64_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  S6_CHECK(nbytes >= 0, "storage: negative size {}", nbytes);
  if (nbytes == 0) return;
  if (device == Device::CPU) {
    int64_t rounded = (nbytes + 63) / 64 * 64;
    data = std::aligned_alloc(64, static_cast<size_t>(rounded));
    S6_CHECK(data != nullptr, "storage: out of host memory allocating {} bytes", nbytes);
  } else {
    data = cuda::allocate(nbytes);
  }
}

Storage::~Storage() {
  if (!data) return;
  if (device == Device::CPU) {
    if (g_poison_freed_host.load(std::memory_order_relaxed))
      std::memset(data, 0xFF, static_cast<size_t>(bytes));
    std::free(data);
  } else {
    cuda::release(data);
  }
}

}  // namespace s6
