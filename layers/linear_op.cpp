// linear(x, W, b) = x W^T + b as one tape node; backward: dx = dy W, dW = dy^T x, db = sum dy.
// linear_split computes the output in contiguous parts (one product per block of W's rows), so a
// projection whose output is split (Mamba's x and z) needs no strided copies either way. The
// input gradient sums the parts' products into dx (beta = 1); with bf16 tensors that is one more
// bf16 rounding of dx than a single product would make (relative 2^-9 per part).
#include <fmt/ranges.h>

#include "autograd/tape.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/reduce.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/linear.h"
#endif

namespace s6 {

namespace {

// Flattens (..., features) to rows; returns the row count.
int64_t rows_of(const Tensor& x) { return x.numel() / x.size(-1); }

// One output part: rows [offset, offset + size) of W (contiguous in a row-major W) and of b.
struct Part {
  int64_t offset, size;
};

// The kernel calls, by device (cuBLASLt with a bias epilogue on CUDA, BLAS on the CPU); the
// checks and the recording around them are shared. y = x W[part]^T + b[part].
void linear_forward(const Tensor& y, const Tensor& x, int64_t ldx, const Tensor& w, const Tensor& b,
                    Part part) {
  const int64_t rows = rows_of(x), in = w.size(1), n = part.size;
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda("linear", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* bp = b.defined() ? b.data<T>() + part.offset : nullptr;
      kernels::cuda::linear_fwd<T>(y.data<T>(), x.data<T>(), w.data<T>() + part.offset * in, bp, rows, in, n,
                                   cuda::current_stream(), ldx);
    });
    return;
  }
#endif
  detail::dispatch_float("linear", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* yp = y.data<T>();
    if (b.defined()) {
      const T* bp = b.data<T>() + part.offset;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) yp[r * n + j] = bp[j];
    }
    kernels::cpu::gemm<T>(false, true, rows, n, in, T(1), x.data<T>(), w.data<T>() + part.offset * in,
                          b.defined() ? T(1) : T(0), yp);
  });
}

// For one part's output gradient dy: dx (+)= dy W[part], dW[part] = dy^T x, db[part] = column
// sums of dy; each only where its tensor is defined. The first part written into dx overwrites it.
void linear_backward(const Tensor& dx, bool accumulate, const Tensor& dw, const Tensor& db, const Tensor& dy,
                     const Tensor& x, int64_t ldx, const Tensor& w, Part part) {
  const int64_t rows = rows_of(x), in = w.size(1), n = part.size, off = part.offset;
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    void* stream = cuda::current_stream();
    detail::dispatch_cuda("linear backward", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (dx.defined())
        kernels::cuda::linear_bwd_input<T>(dx.data<T>(), dy.data<T>(), w.data<T>() + off * in, rows, in, n,
                                           stream, accumulate);
      if (dw.defined())
        kernels::cuda::linear_bwd_weight<T>(dw.data<T>() + off * in, dy.data<T>(), x.data<T>(), rows, in, n,
                                            stream, ldx);
      if (db.defined()) kernels::cuda::sum_rows<T>(db.data<T>() + off, dy.data<T>(), rows, n, stream);
    });
    return;
  }
#endif
  detail::dispatch_float("linear backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined())
      kernels::cpu::gemm<T>(false, false, rows, in, n, T(1), dy.data<T>(), w.data<T>() + off * in,
                            accumulate ? T(1) : T(0), dx.data<T>());
    if (dw.defined())
      kernels::cpu::gemm<T>(true, false, n, in, rows, T(1), dy.data<T>(), x.data<T>(), T(0),
                            dw.data<T>() + off * in);
    if (db.defined()) kernels::cpu::sum_rows<T>(db.data<T>() + off, dy.data<T>(), rows, n);
  });
}

}  // namespace

std::vector<Tensor> linear_split(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in,
                                 const std::vector<int64_t>& sizes) {
  detail::check_same_float("linear", {&x_in, &w_in, &b_in});
  detail::check_rank("linear", "weight", w_in, 2);
  S6_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w_in.size(1),
           "linear: input {} has {} features but weight {} expects {}", x_in.describe(),
           x_in.dim() ? x_in.size(-1) : 0, w_in.describe(), w_in.size(1));
  if (b_in.defined()) detail::check_shape("linear", "bias", b_in, {w_in.size(0)});
  std::vector<Part> parts;
  int64_t total = 0;
  for (int64_t size : sizes) {
    S6_CHECK(size >= 0, "linear: output part sizes must be >= 0; got {}", fmt::join(sizes, ", "));
    parts.push_back({total, size});
    total += size;
  }
  S6_CHECK(!sizes.empty() && total == w_in.size(0),
           "linear: output parts ({}) must add up to the weight's {} output features", fmt::join(sizes, ", "),
           w_in.size(0));
  if (detail::any_cpu_bf16({&x_in})) {
    auto w = detail::widen_bf16;
    std::vector<Tensor> wide = linear_split(w(x_in), w(w_in), w(b_in), sizes);
    for (Tensor& t : wide) t = to_dtype(t, DType::BFloat16);
    return wide;
  }
  // CUDA reads x in place when its rows are evenly spaced (cuBLAS's leading dimension); the CPU
  // path takes a contiguous copy.
  const int64_t ldx = x_in.is_cuda() ? detail::uniform_row_stride(x_in) : 0;
  Tensor x = ldx ? x_in : x_in.contiguous(), w = w_in.contiguous(),
         b = b_in.defined() ? b_in.contiguous() : b_in;
  std::vector<Tensor> ys;
  std::vector<Tensor*> outputs;
  ys.reserve(parts.size());
  for (Part part : parts) {
    Shape out_shape = x.shape();
    out_shape.back() = part.size;
    ys.push_back(Tensor::empty(out_shape, x.dtype(), x.device()));
    if (part.size > 0) linear_forward(ys.back(), x, ldx, w, b, part);
  }
  for (Tensor& y : ys) outputs.push_back(&y);
  if (autograd::should_record({&x_in, &w_in, &b_in})) {
    autograd::record(
        "linear", {x_in, w_in, b_in}, outputs,
        [x, ldx, w, parts, has_bias = b.defined()](const autograd::BackwardContext& ctx) {
          Tensor dx, dw, db;
          if (ctx.needs_input_grad[0]) dx = Tensor::empty_like(x);
          if (ctx.needs_input_grad[1]) dw = Tensor::empty_like(w);
          if (has_bias && ctx.needs_input_grad[2]) db = Tensor::empty({w.size(0)}, x.dtype(), x.device());
          bool dx_written = false;
          for (size_t i = 0; i < parts.size(); ++i) {
            const Tensor& g = ctx.grad_outputs[i];
            if (parts[i].size == 0) continue;
            if (!g.defined()) {  // no gradient reached this part: its weight and bias rows get zeros
              if (dw.defined()) dw.narrow(0, parts[i].offset, parts[i].size).zero_();
              if (db.defined()) db.narrow(0, parts[i].offset, parts[i].size).zero_();
              continue;
            }
            linear_backward(dx, dx_written, dw, db, g.contiguous(), x, ldx, w, parts[i]);
            dx_written = dx_written || dx.defined();
          }
          if (dx.defined() && !dx_written) dx.zero_();
          return autograd::TensorList{dx, dw, db};
        });
  }
  return ys;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_rank("linear", "weight", w, 2);
  return linear_split(x, w, b, {w.size(0)})[0];
}

}  // namespace s6
