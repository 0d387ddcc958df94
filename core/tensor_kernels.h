// The element loops core itself needs (fill, strided copy with dtype conversion, accumulate), on
// the CPU and on CUDA. Higher-level math lives in kernels/.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::detail {

constexpr int kMaxDims = 8;

// A strided operand: element (i0..in) lives at data + sum(ik * strides[k]) elements.
struct StridedView {
  void* data;
  DType dtype;
  int64_t strides[kMaxDims];
};
struct StridedShape {
  int ndim;
  int64_t sizes[kMaxDims];
  int64_t numel;
};

// Drops size-1 dimensions and merges neighbours that are contiguous with each other in every
// view, so most strided loops become one or two dimensions (less index math per element).
void coalesce_dims(StridedShape& shape, StridedView* views, int num_views);

// Up to kMaxConcatParts contiguous parts joined along one dimension: dst (outer, total, inner)
// contiguous, part k (outer, size[k], inner) contiguous, all elem_bytes wide (1, 2, 4 or 8).
constexpr int kMaxConcatParts = 8;
struct ConcatParts {
  const void* data[kMaxConcatParts];
  int64_t size[kMaxConcatParts];
  int n;
};

void fill_cpu(const StridedShape& shape, const StridedView& dst, double value);
void copy_cpu(const StridedShape& shape, const StridedView& dst, const StridedView& src);
void add_cpu(void* dst, const void* src, DType dtype, int64_t n, double alpha);
void argmax_rows_cpu(int32_t* out, const void* src, DType dtype, int64_t rows, int64_t width);
void concat_cpu(void* dst, const ConcatParts& parts, int elem_bytes, int64_t outer, int64_t total,
                int64_t inner);

void fill_cuda(const StridedShape& shape, const StridedView& dst, double value);
void copy_cuda(const StridedShape& shape, const StridedView& dst, const StridedView& src);
void add_cuda(void* dst, const void* src, DType dtype, int64_t n, double alpha);
void argmax_rows_cuda(int32_t* out, const void* src, DType dtype, int64_t rows, int64_t width);
void concat_cuda(void* dst, const ConcatParts& parts, int elem_bytes, int64_t outer, int64_t total,
                 int64_t inner);

}  // namespace s6::detail
