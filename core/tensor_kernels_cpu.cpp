// CPU element loops for core: strided fill/copy (with conversion) and contiguous accumulate.
#include <cstring>

#include "core/error.h"
#include "core/tensor_kernels.h"

namespace s6::detail {

namespace {

template <typename T> inline T from_double(double v) { return static_cast<T>(v); }
template <> inline BFloat16 from_double<BFloat16>(double v) { return BFloat16(static_cast<float>(v)); }
template <typename T> inline double to_double(T v) { return static_cast<double>(v); }
template <> inline double to_double<BFloat16>(BFloat16 v) { return static_cast<float>(v); }

template <typename Fn> void dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float32: fn(float{}); break;
    case DType::Float64: fn(double{}); break;
    case DType::BFloat16: fn(BFloat16{}); break;
    case DType::Int32: fn(int32_t{}); break;
    case DType::Int64: fn(int64_t{}); break;
  }
}

inline int64_t offset_of(int64_t linear, const StridedShape& s, const int64_t* strides) {
  int64_t off = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    int64_t i = linear % s.sizes[d];
    linear /= s.sizes[d];
    off += i * strides[d];
  }
  return off;
}

}  // namespace

void coalesce_dims(StridedShape& shape, StridedView* views, int num_views) {
  int out = 0;
  for (int d = 0; d < shape.ndim; ++d) {
    if (shape.sizes[d] == 1) continue;
    bool merge = out > 0;
    for (int v = 0; v < num_views && merge; ++v)
      merge = views[v].strides[out - 1] == views[v].strides[d] * shape.sizes[d];
    if (merge) {
      shape.sizes[out - 1] *= shape.sizes[d];
      for (int v = 0; v < num_views; ++v) views[v].strides[out - 1] = views[v].strides[d];
    } else {
      shape.sizes[out] = shape.sizes[d];
      for (int v = 0; v < num_views; ++v) views[v].strides[out] = views[v].strides[d];
      ++out;
    }
  }
  shape.ndim = out;
}

void fill_cpu(const StridedShape& shape_in, const StridedView& dst_in, double value) {
  StridedShape shape = shape_in;
  StridedView dst = dst_in;
  coalesce_dims(shape, &dst, 1);
  dispatch_all(dst.dtype, [&](auto tag) {
    using T = decltype(tag);
    T v = from_double<T>(value);
    T* p = static_cast<T*>(dst.data);
#pragma omp parallel for if (shape.numel > 65536)
    for (int64_t i = 0; i < shape.numel; ++i) p[offset_of(i, shape, dst.strides)] = v;
  });
}

void copy_cpu(const StridedShape& shape_in, const StridedView& dst_in, const StridedView& src_in) {
  StridedShape shape = shape_in;
  StridedView views[2] = {dst_in, src_in};
  coalesce_dims(shape, views, 2);
  const StridedView &dst = views[0], &src = views[1];
  dispatch_all(dst.dtype, [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_all(src.dtype, [&](auto stag) {
      using S = decltype(stag);
      D* d = static_cast<D*>(dst.data);
      const S* s = static_cast<const S*>(src.data);
      const int last = shape.ndim - 1;
      if (last >= 0 && dst.strides[last] == 1 && src.strides[last] == 1 && shape.sizes[last] > 1) {
        // Rows contiguous in both (narrowed projections, most copies): index math once per row.
        const int64_t width = shape.sizes[last], rows = shape.numel / width;
        StridedShape outer = shape;
        outer.ndim = last;
        outer.numel = rows;
#pragma omp parallel for if (shape.numel > 65536)
        for (int64_t r = 0; r < rows; ++r) {
          D* drow = d + offset_of(r, outer, dst.strides);
          const S* srow = s + offset_of(r, outer, src.strides);
          for (int64_t j = 0; j < width; ++j) {
            if constexpr (std::is_same_v<D, S>) drow[j] = srow[j];
            else drow[j] = from_double<D>(to_double<S>(srow[j]));
          }
        }
        return;
      }
#pragma omp parallel for if (shape.numel > 65536)
      for (int64_t i = 0; i < shape.numel; ++i) {
        S v = s[offset_of(i, shape, src.strides)];
        D out;
        if constexpr (std::is_same_v<D, S>) {
          out = v;
        } else {
          out = from_double<D>(to_double<S>(v));
        }
        d[offset_of(i, shape, dst.strides)] = out;
      }
    });
  });
}

void add_cpu(void* dst, const void* src, DType dtype, int64_t n, double alpha) {
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* d = static_cast<T*>(dst);
    const T* s = static_cast<const T*>(src);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) d[i] = from_double<T>(to_double<T>(d[i]) + alpha * to_double<T>(s[i]));
  });
}

void argmax_rows_cpu(int32_t* out, const void* src, DType dtype, int64_t rows, int64_t width) {
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(src);
#pragma omp parallel for if (rows * width > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = base + r * width;
      int64_t best = 0;
      for (int64_t v = 1; v < width; ++v)
        if (to_double<T>(row[v]) > to_double<T>(row[best])) best = v;
      out[r] = static_cast<int32_t>(best);
    }
  });
}

void concat_cpu(void* dst, const ConcatParts& parts, int elem_bytes, int64_t outer, int64_t total,
                int64_t inner) {
  char* out = static_cast<char*>(dst);
  for (int64_t o = 0; o < outer; ++o) {
    for (int k = 0; k < parts.n; ++k) {
      const int64_t bytes = parts.size[k] * inner * elem_bytes;
      std::memcpy(out, static_cast<const char*>(parts.data[k]) + o * bytes, static_cast<size_t>(bytes));
      out += bytes;
    }
  }
  (void)total;
}

}  // namespace s6::detail
