// A block of memory on one device, shared by every Tensor view of it; freed through its allocator.
#pragma once
#include <cstdint>
#include <memory>

#include "core/dtype.h"

namespace s6 {

struct Storage {
  void* data = nullptr;
  int64_t bytes = 0;
  Device device = Device::CPU;

  Storage(int64_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

using StoragePtr = std::shared_ptr<Storage>;

// Test aid: while on, freed host storage is first filled with 0xFF bytes (NaN as float or double),
// so code that reads a tensor's memory after the tensor is gone sees NaN instead of stale values.
void set_poison_freed_host_memory(bool on);

}  // namespace s6
