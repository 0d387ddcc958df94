// CPU-only build: the CUDA services report that this build has no CUDA, naming the fix.
#include "core/cuda_runtime.h"
#include "core/error.h"

namespace s6::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  S6_FAIL(
      "{}: this build of s6 has no CUDA support (nvcc was not found at configure time); "
      "use device=cpu or rebuild on a machine with the CUDA toolkit",
      what);
}
}  // namespace

bool compiled_with_cuda() { return false; }
bool available() { return false; }
int device_count() { return 0; }
void set_device(int) { no_cuda("set_device"); }
void* current_stream() { return nullptr; }
void set_current_stream(void*) {}
void synchronize() {}
void* allocate(int64_t) { no_cuda("allocate"); }
void release(void*) {}
AllocatorStats allocator_stats() { return {}; }
void reset_peak_stats() {}
void empty_cache() {}
void* create_stream() { no_cuda("create_stream"); }
void destroy_stream(void*) {}
void begin_capture() { no_cuda("begin_capture"); }
CapturedGraph* end_capture() { no_cuda("end_capture"); }
void abort_capture() {}
void replay(CapturedGraph*) { no_cuda("replay"); }
void destroy_graph(CapturedGraph*) {}
void copy_bytes(void*, const void*, int64_t, CopyKind) { no_cuda("copy"); }
void* allocate_pinned(int64_t) { no_cuda("allocate_pinned"); }
void release_pinned(void*) {}
void copy_bytes_async(void*, const void*, int64_t, CopyKind) { no_cuda("copy_bytes_async"); }
void memset_zero(void*, int64_t) { no_cuda("memset"); }

}  // namespace s6::cuda

#include "core/tensor_kernels.h"

namespace s6::detail {
void fill_cuda(const StridedShape&, const StridedView&, double) { S6_FAIL("fill: no CUDA in this build"); }
void copy_cuda(const StridedShape&, const StridedView&, const StridedView&) {
  S6_FAIL("copy: no CUDA in this build");
}
void add_cuda(void*, const void*, DType, int64_t, double) { S6_FAIL("add_: no CUDA in this build"); }
void argmax_rows_cuda(int32_t*, const void*, DType, int64_t, int64_t) {
  S6_FAIL("argmax_last: no CUDA in this build");
}
void concat_cuda(void*, const ConcatParts&, int, int64_t, int64_t, int64_t) {
  S6_FAIL("concat: no CUDA in this build");
}
}  // namespace s6::detail
