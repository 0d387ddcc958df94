// linear(x, W, b) = x W^T + b as one tape node; backward: dx = dy W, dW = dy^T x, db = sum dy.
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

// The kernel calls, by device (cuBLASLt with a bias epilogue on CUDA, BLAS on the CPU); the
// checks and the recording around them are shared.
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t rows = rows_of(x), in = w.size(1), out_features = w.size(0);
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda("linear", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::linear_fwd<T>(y.data<T>(), x.data<T>(), w.data<T>(), detail::ptr_or_null<T>(b), rows, in,
                                   out_features, cuda::current_stream());
    });
    return;
  }
#endif
  detail::dispatch_float("linear", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* yp = y.data<T>();
    if (b.defined()) {
      const T* bp = b.data<T>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < out_features; ++j) yp[r * out_features + j] = bp[j];
    }
    kernels::cpu::gemm<T>(false, true, rows, out_features, in, T(1), x.data<T>(), w.data<T>(),
                          b.defined() ? T(1) : T(0), yp);
  });
}

// dx = dy W, dW = dy^T x, db = column sums of dy; each only where its tensor is defined.
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                     const Tensor& w) {
  const int64_t rows = rows_of(x), in = w.size(1), out_features = w.size(0);
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    void* stream = cuda::current_stream();
    detail::dispatch_cuda("linear backward", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (dx.defined())
        kernels::cuda::linear_bwd_input<T>(dx.data<T>(), dy.data<T>(), w.data<T>(), rows, in, out_features, stream);
      if (dw.defined())
        kernels::cuda::linear_bwd_weight<T>(dw.data<T>(), dy.data<T>(), x.data<T>(), rows, in, out_features, stream);
      if (db.defined()) kernels::cuda::sum_rows<T>(db.data<T>(), dy.data<T>(), rows, out_features, stream);
    });
    return;
  }
#endif
  detail::dispatch_float("linear backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined())
      kernels::cpu::gemm<T>(false, false, rows, in, out_features, T(1), dy.data<T>(), w.data<T>(), T(0),
                            dx.data<T>());
    if (dw.defined())
      kernels::cpu::gemm<T>(true, false, out_features, in, rows, T(1), dy.data<T>(), x.data<T>(), T(0),
                            dw.data<T>());
    if (db.defined()) kernels::cpu::sum_rows<T>(db.data<T>(), dy.data<T>(), rows, out_features);
  });
}

}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  detail::check_same_float("linear", {&x_in, &w_in, &b_in});
  detail::check_rank("linear", "weight", w_in, 2);
  S6_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w_in.size(1),
           "linear: input {} has {} features but weight {} expects {}", x_in.describe(),
           x_in.dim() ? x_in.size(-1) : 0, w_in.describe(), w_in.size(1));
  if (b_in.defined()) detail::check_shape("linear", "bias", b_in, {w_in.size(0)});
  if (detail::any_cpu_bf16({&x_in})) {
    auto w = detail::widen_bf16;
    return to_dtype(linear(w(x_in), w(w_in), w(b_in)), DType::BFloat16);
  }
  Tensor x = x_in.contiguous(), w = w_in.contiguous(), b = b_in.defined() ? b_in.contiguous() : b_in;
  Shape out_shape = x.shape();
  out_shape.back() = w.size(0);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  linear_forward(y, x, w, b);
  if (autograd::should_record({&x_in, &w_in, &b_in})) {
    autograd::record("linear", {x_in, w_in, b_in}, {&y}, [x, w, has_bias = b.defined()](
                                                          const autograd::BackwardContext& ctx) {
      Tensor dx, dw, db;
      if (ctx.needs_input_grad[0]) dx = Tensor::empty_like(x);
      if (ctx.needs_input_grad[1]) dw = Tensor::empty_like(w);
      if (has_bias && ctx.needs_input_grad[2]) db = Tensor::empty({w.size(0)}, x.dtype(), x.device());
      linear_backward(dx, dw, db, ctx.grad_outputs[0].contiguous(), x, w);
      return autograd::TensorList{dx, dw, db};
    });
  }
  return y;
}

}  // namespace s6
