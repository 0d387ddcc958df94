// rmsnorm_add as one two-output tape node; backward returns the same ds for x and the residual
// (in x's dtype for x: bf16 under mixed precision, where the residual stream is float32).
#include "autograd/tape.h"
#include "kernels/cpu/rmsnorm.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/rmsnorm.h"
#endif

namespace s6 {

namespace {

// Calls fn(X{}, R{}) for the CUDA kernels' activation and residual-stream types.
template <typename Fn> void dispatch_norm_cuda(const char* op, DType x, DType r, Fn&& fn) {
  if (x == DType::BFloat16 && r == DType::Float32) {
    fn(BFloat16{}, float{});
    return;
  }
  detail::dispatch_cuda(op, x, [&](auto tag) { fn(tag, tag); });
}

// The kernel calls, by device; everything around them (checks, recording) is shared. The CPU
// kernels take one dtype (a bf16 x was widened before this).
void norm_forward(const Tensor& y, const Tensor& s, const Tensor& x, const Tensor& res, const Tensor& w,
                  int64_t rows, int64_t width, double eps) {
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    dispatch_norm_cuda("rmsnorm_add", x.dtype(), w.dtype(), [&](auto xtag, auto rtag) {
      using X = decltype(xtag);
      using R = decltype(rtag);
      kernels::cuda::rmsnorm_add_fwd<X, R>(y.data<X>(), s.data<R>(), x.data<X>(), detail::ptr_or_null<R>(res),
                                           w.data<R>(), rows, width, eps, cuda::current_stream());
    });
    return;
  }
#endif
  detail::dispatch_float("rmsnorm_add", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::rmsnorm_add_fwd<T>(y.data<T>(), s.data<T>(), x.data<T>(), detail::ptr_or_null<T>(res),
                                     w.data<T>(), rows, width, eps);
  });
}

// ds (residual-stream dtype) and dsx (the same values in the activations' dtype) may each be
// undefined.
void norm_backward(const Tensor& ds, const Tensor& dsx, const Tensor& dw, const Tensor& dy, const Tensor& dres,
                   const Tensor& s, const Tensor& w, int64_t rows, int64_t width, double eps) {
#ifdef S6_WITH_CUDA
  if (s.is_cuda()) {
    dispatch_norm_cuda("rmsnorm_add backward", dy.dtype(), s.dtype(), [&](auto xtag, auto rtag) {
      using X = decltype(xtag);
      using R = decltype(rtag);
      kernels::cuda::rmsnorm_add_bwd<X, R>(
          detail::mut_or_null<R>(ds), detail::mut_or_null<X>(dsx), detail::mut_or_null<R>(dw), dy.data<X>(),
          detail::ptr_or_null<R>(dres), s.data<R>(), w.data<R>(), rows, width, eps, cuda::current_stream());
    });
    return;
  }
#endif
  S6_CHECK(!dsx.defined(), "rmsnorm_add backward: the CPU computes mixed precision by widening");
  detail::dispatch_float("rmsnorm_add backward", s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::rmsnorm_add_bwd<T>(detail::mut_or_null<T>(ds), detail::mut_or_null<T>(dw), dy.data<T>(),
                                     detail::ptr_or_null<T>(dres), s.data<T>(), w.data<T>(), rows, width, eps);
  });
}

}  // namespace

std::pair<Tensor, Tensor> rmsnorm_add(const Tensor& x_in, const Tensor& residual_in, const Tensor& weight_in,
                                      double eps) {
  // Mixed precision: a bf16 x (the mixer's output) over a float32 residual stream and weight; y
  // comes out bf16 (the next projection's input) and s float32.
  const bool mixed = x_in.defined() && weight_in.defined() && x_in.dtype() == DType::BFloat16 &&
                     weight_in.dtype() == DType::Float32;
  if (mixed) {
    detail::check_same_float("rmsnorm_add", {&residual_in, &weight_in});
    S6_CHECK(x_in.device() == weight_in.device(), "rmsnorm_add: inputs disagree: {} vs {}", x_in.describe(),
             weight_in.describe());
  } else {
    detail::check_same_float("rmsnorm_add", {&x_in, &residual_in, &weight_in});
  }
  S6_CHECK(x_in.dim() >= 1, "rmsnorm_add: input {} has no feature dimension", x_in.describe());
  int64_t width = x_in.size(-1);
  detail::check_shape("rmsnorm_add", "weight", weight_in, {width});
  if (residual_in.defined()) detail::check_shape("rmsnorm_add", "residual", residual_in, x_in.shape());
  S6_CHECK(eps > 0, "rmsnorm_add: eps must be positive, got {}", eps);
  if (detail::any_cpu_bf16({&x_in})) {
    auto w = detail::widen_bf16;
    auto [y, s] = rmsnorm_add(w(x_in), w(residual_in), w(weight_in), eps);
    return {to_dtype(y, DType::BFloat16), mixed ? s : to_dtype(s, DType::BFloat16)};
  }
  Tensor x = x_in.contiguous(), w = weight_in.contiguous();
  Tensor res = residual_in.defined() ? residual_in.contiguous() : Tensor();
  int64_t rows = x.numel() / std::max<int64_t>(width, 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor s = Tensor::empty(x.shape(), w.dtype(), x.device());
  norm_forward(y, s, x, res, w, rows, width, eps);
  if (autograd::should_record({&x_in, &residual_in, &weight_in})) {
    Tensor s_saved = s.detach();
    autograd::record(
        "rmsnorm_add", {x_in, residual_in, weight_in}, {&y, &s},
        [s_saved, w, rows, width, eps, mixed](const autograd::BackwardContext& ctx) {
          const Tensor& dy_in = ctx.grad_outputs[0];
          const Tensor& dres_in = ctx.grad_outputs[1];
          const bool want_x = ctx.needs_input_grad[0], want_res = ctx.needs_input_grad[1];
          Tensor ds, dsx, dw;
          if (!dy_in.defined()) {  // only the residual stream carries a gradient
            ds = dres_in;
            if (mixed && want_x) dsx = dres_in.to(DType::BFloat16);
          } else {
            Tensor dres = dres_in.defined() ? dres_in.contiguous() : Tensor();
            if (want_res || (want_x && !mixed)) ds = Tensor::empty_like(s_saved);
            if (want_x && mixed) dsx = Tensor::empty(s_saved.shape(), DType::BFloat16, s_saved.device());
            if (ctx.needs_input_grad[2]) dw = Tensor::empty_like(w);
            norm_backward(ds, dsx, dw, dy_in.contiguous(), dres, s_saved, w, rows, width, eps);
          }
          return autograd::TensorList{want_x ? (mixed ? dsx : ds) : Tensor(), want_res ? ds : Tensor(), dw};
        });
  }
  return {y, s};
}

}  // namespace s6
