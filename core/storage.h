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

}  // namespace s6
