// CUDA runtime services for core: device queries, the per-thread stream, copies and the caching
// allocator. Compiled only when the CUDA toolkit is found (cuda_runtime_stub.cpp otherwise).
#include "core/cuda_runtime.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"

#define S6_CUDA_CALL(expr)                                                                     \
  do {                                                                                         \
    cudaError_t err_ = (expr);                                                                 \
    S6_CHECK(err_ == cudaSuccess, "CUDA call {} failed: {}", #expr, cudaGetErrorString(err_)); \
  } while (0)

namespace s6::cuda {

bool compiled_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

void set_device(int index) { S6_CUDA_CALL(cudaSetDevice(index)); }

namespace {
thread_local cudaStream_t g_stream = nullptr;
}

void* current_stream() { return g_stream; }
void set_current_stream(void* stream) { g_stream = static_cast<cudaStream_t>(stream); }
void synchronize() { S6_CUDA_CALL(cudaStreamSynchronize(g_stream)); }

namespace {

// Exact-size buckets suit training: every step asks for the same sizes, so after the first step
// no request reaches cudaMalloc. Small sizes round to 512 B, large ones to 2 MiB.
int64_t round_size(int64_t bytes) {
  constexpr int64_t kSmall = 512, kLarge = 2 << 20;
  if (bytes < (1 << 20)) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

// Pool 0 serves ordinary allocations; each graph capture gets its own pool (see begin_capture).
struct CachingAllocator {
  struct Block {
    int64_t size;
    int pool;
  };
  std::mutex mutex;
  std::unordered_map<int, std::unordered_map<int64_t, std::vector<void*>>>
      free_blocks;  // pool -> size -> blocks
  std::unordered_map<void*, Block> live;
  std::unordered_set<int> retired_pools;  // of destroyed graphs: their blocks serve pool 0 again
  int active_pool = 0, next_pool = 1;
  AllocatorStats stats;

  void* allocate(int64_t bytes) {
    int64_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex);
    void* ptr = nullptr;
    auto& sized = free_blocks[active_pool];
    auto it = sized.find(size);
    if (it != sized.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
    } else {
      if (cudaMalloc(&ptr, size) != cudaSuccess) {
        cudaGetLastError();
        S6_CHECK(active_pool == 0, "CUDA out of memory allocating {} bytes inside a graph capture", size);
        release_cached_locked();
        cudaError_t err = cudaMalloc(&ptr, size);
        S6_CHECK(err == cudaSuccess,
                 "CUDA out of memory allocating {} bytes ({} in use by tensors, peak {}): {}", size,
                 stats.allocated_bytes, stats.peak_allocated_bytes, cudaGetErrorString(err));
      }
      stats.cached_bytes += size;
      stats.device_allocations += 1;
    }
    live[ptr] = Block{size, active_pool};
    stats.allocated_bytes += size;
    if (stats.allocated_bytes > stats.peak_allocated_bytes) stats.peak_allocated_bytes = stats.allocated_bytes;
    return ptr;
  }

  void release(void* ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = live.find(ptr);
    if (it == live.end()) return;  // not ours: never free memory we did not hand out
    const int pool = retired_pools.count(it->second.pool) ? 0 : it->second.pool;
    free_blocks[pool][it->second.size].push_back(ptr);
    stats.allocated_bytes -= it->second.size;
    live.erase(it);
  }

  // After its graph is gone, a capture pool's cached blocks (and, when freed, its live ones) go
  // back to ordinary use.
  void retire_pool_locked(int pool) {
    if (pool == 0) return;
    retired_pools.insert(pool);
    auto it = free_blocks.find(pool);
    if (it == free_blocks.end()) return;
    for (auto& [size, blocks] : it->second) {
      auto& dst = free_blocks[0][size];
      dst.insert(dst.end(), blocks.begin(), blocks.end());
    }
    free_blocks.erase(it);
  }

  // Frees only ordinary cached blocks: a graph pool's blocks stay reserved for its replays.
  void release_cached_locked() {
    cudaDeviceSynchronize();
    for (auto& [size, blocks] : free_blocks[0]) {
      for (void* p : blocks) {
        cudaFree(p);
        stats.cached_bytes -= size;
      }
      blocks.clear();
    }
  }
};

CachingAllocator& allocator() {
  static auto* instance = new CachingAllocator();  // leaked on purpose: outlives static tensors
  return *instance;
}

}  // namespace

void* allocate(int64_t bytes) { return allocator().allocate(bytes); }
void release(void* ptr) { allocator().release(ptr); }

AllocatorStats allocator_stats() {
  std::lock_guard<std::mutex> lock(allocator().mutex);
  return allocator().stats;
}

void reset_peak_stats() {
  std::lock_guard<std::mutex> lock(allocator().mutex);
  allocator().stats.peak_allocated_bytes = allocator().stats.allocated_bytes;
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(allocator().mutex);
  allocator().release_cached_locked();
}

void* create_stream() {
  cudaStream_t stream = nullptr;
  S6_CUDA_CALL(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

void destroy_stream(void* stream) {
  if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

struct CapturedGraph {
  cudaGraphExec_t exec = nullptr;
  int pool = 0;  // the allocator pool its capture drew from
};

void begin_capture() {
  S6_CHECK(g_stream != nullptr,
           "begin_capture: the legacy default stream cannot be captured; "
           "set_current_stream(create_stream()) first");
  {
    std::lock_guard<std::mutex> lock(allocator().mutex);
    S6_CHECK(allocator().active_pool == 0, "begin_capture: a capture is already in progress");
    allocator().active_pool = allocator().next_pool++;
  }
  S6_CUDA_CALL(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeRelaxed));
}

namespace {
// Returns the pool the capture used.
int leave_capture_pool() {
  std::lock_guard<std::mutex> lock(allocator().mutex);
  const int pool = allocator().active_pool;
  allocator().active_pool = 0;
  return pool;
}

void retire_pool(int pool) {
  std::lock_guard<std::mutex> lock(allocator().mutex);
  allocator().retire_pool_locked(pool);
}
}  // namespace

CapturedGraph* end_capture() {
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamEndCapture(g_stream, &graph);
  const int pool = leave_capture_pool();
  if (err != cudaSuccess) retire_pool(pool);
  S6_CHECK(err == cudaSuccess,
           "end_capture: the capture failed: {} (an operation in the captured "
           "region synchronized or copied to the host?)",
           cudaGetErrorString(err));
  auto* out = new CapturedGraph();
  out->pool = pool;
  err = cudaGraphInstantiate(&out->exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    delete out;
    retire_pool(pool);
    S6_FAIL("end_capture: cudaGraphInstantiate failed: {}", cudaGetErrorString(err));
  }
  return out;
}

void abort_capture() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (g_stream && cudaStreamIsCapturing(g_stream, &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(g_stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
  retire_pool(leave_capture_pool());
}

void replay(CapturedGraph* graph) { S6_CUDA_CALL(cudaGraphLaunch(graph->exec, g_stream)); }

void destroy_graph(CapturedGraph* graph) {
  if (!graph) return;
  cudaDeviceSynchronize();  // no replay may still use the pool's blocks when they are reused
  cudaGraphExecDestroy(graph->exec);
  retire_pool(graph->pool);
  delete graph;
}

void copy_bytes(void* dst, const void* src, int64_t bytes, CopyKind kind) {
  copy_bytes_async(dst, src, bytes, kind);
  if (bytes > 0 && kind != CopyKind::DeviceToDevice) S6_CUDA_CALL(cudaStreamSynchronize(g_stream));
}

void* allocate_pinned(int64_t bytes) {
  void* ptr = nullptr;
  S6_CUDA_CALL(cudaHostAlloc(&ptr, static_cast<size_t>(std::max<int64_t>(bytes, 1)), cudaHostAllocDefault));
  return ptr;
}

void release_pinned(void* ptr) {
  if (ptr) cudaFreeHost(ptr);
}

void copy_bytes_async(void* dst, const void* src, int64_t bytes, CopyKind kind) {
  if (bytes == 0) return;
  cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyDeviceToDevice;
  S6_CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, k, g_stream));
}

void memset_zero(void* dst, int64_t bytes) {
  if (bytes) S6_CUDA_CALL(cudaMemsetAsync(dst, 0, bytes, g_stream));
}

}  // namespace s6::cuda
