// The few CUDA runtime services core needs (device query, caching allocator, copies, the stream),
// declared without CUDA headers so CPU-only builds compile; without CUDA they throw a clear error.
#pragma once
#include <cstdint>

namespace s6::cuda {

bool compiled_with_cuda();
// True when built with CUDA and at least one device is visible.
bool available();
int device_count();
void set_device(int index);

// Stream that every s6 kernel and copy runs on (one per thread; the legacy default stream until set).
void* current_stream();
void set_current_stream(void* stream);
void synchronize();

// Caching allocator: freed blocks stay cached per size class and are reused in stream order.
void* allocate(int64_t bytes);
void release(void* ptr);
struct AllocatorStats {
  int64_t allocated_bytes = 0;  // handed out to tensors now
  int64_t peak_allocated_bytes = 0;
  int64_t cached_bytes = 0;        // held from the driver (in use + free)
  int64_t device_allocations = 0;  // calls that reached cudaMalloc
};
AllocatorStats allocator_stats();
void reset_peak_stats();
void empty_cache();

// A stream of our own (non-blocking, so it can be captured); the caller destroys it.
void* create_stream();
void destroy_stream(void* stream);

// CUDA graphs. begin_capture() starts capturing the current stream (relaxed mode) and makes every
// allocation of this process come from a private pool until end_capture(); blocks of that pool go
// back to it when freed and are never handed to allocations outside a capture of it, so the
// graph's addresses stay valid for every replay. end_capture() returns an executable graph.
// destroy_graph() (after a device sync) and a failed capture return the pool to ordinary use.
// Blocks freed inside the capture are reused by later kernels of the same capture, so memory the
// host fills for the graph to read (tables, inputs) must be allocated before begin_capture().
struct CapturedGraph;
void begin_capture();
CapturedGraph* end_capture();
void abort_capture();  // after a failure inside a capture: ends it and drops what was captured
void replay(CapturedGraph* graph);
void destroy_graph(CapturedGraph* graph);

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
// Copies on the current stream; host copies wait for completion.
void copy_bytes(void* dst, const void* src, int64_t bytes, CopyKind kind);
// Page-locked host memory, and a copy that never waits (host memory must be page-locked and stay
// untouched until the stream has passed the copy).
void* allocate_pinned(int64_t bytes);
void release_pinned(void* ptr);
void copy_bytes_async(void* dst, const void* src, int64_t bytes, CopyKind kind);
void memset_zero(void* dst, int64_t bytes);

}  // namespace s6::cuda
