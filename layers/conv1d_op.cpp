// causal_conv1d (+SiLU) as one tape node; it saves x, not the activation (backward recomputes).
#include "autograd/tape.h"
#include "kernels/cpu/causal_conv1d.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/causal_conv1d.h"
#endif

namespace s6 {

namespace {

// The kernel calls, by device; everything around them (checks, recording) is shared.
void conv_forward(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& init,
                  bool silu, const kernels::cpu::ConvDims& dims) {
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda("causal_conv1d", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::causal_conv1d_fwd<T>(out.data<T>(), x.data<T>(), w.data<T>(), detail::ptr_or_null<T>(b),
                                          detail::ptr_or_null<T>(init), silu, dims, cuda::current_stream());
    });
    return;
  }
#endif
  detail::dispatch_float("causal_conv1d", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::causal_conv1d_fwd<T>(out.data<T>(), x.data<T>(), w.data<T>(), detail::ptr_or_null<T>(b),
                                       detail::ptr_or_null<T>(init), silu, dims);
  });
}

void conv_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dout, const Tensor& x,
                   const Tensor& w, const Tensor& b, const Tensor& init, bool silu,
                   const kernels::cpu::ConvDims& dims) {
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda("causal_conv1d backward", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::causal_conv1d_bwd<T>(detail::mut_or_null<T>(dx), detail::mut_or_null<T>(dw),
                                          detail::mut_or_null<T>(db), dout.data<T>(), x.data<T>(), w.data<T>(),
                                          detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init), silu, dims,
                                          cuda::current_stream());
    });
    return;
  }
#endif
  detail::dispatch_float("causal_conv1d backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::causal_conv1d_bwd<T>(detail::mut_or_null<T>(dx), detail::mut_or_null<T>(dw),
                                       detail::mut_or_null<T>(db), dout.data<T>(), x.data<T>(), w.data<T>(),
                                       detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init), silu, dims);
  });
}

}  // namespace

Tensor causal_conv1d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, bool silu,
                     const Tensor& initial_state_in) {
  const char* op = "causal_conv1d";
  detail::check_same_float(op, {&x_in, &weight_in, &bias_in, &initial_state_in});
  detail::check_rank(op, "x (batch, length, channels)", x_in, 3);
  int64_t batch = x_in.size(0), length = x_in.size(1), dim = x_in.size(2);
  S6_CHECK(
      (weight_in.dim() == 2 || (weight_in.dim() == 3 && weight_in.size(1) == 1)) && weight_in.size(0) == dim,
      "{}: weight should be ({}, width) or ({}, 1, width) but is {}", op, dim, dim, weight_in.describe());
  int64_t width = weight_in.size(-1);
  S6_CHECK(width >= 1, "{}: weight {} has width 0", op, weight_in.describe());
  if (bias_in.defined()) detail::check_shape(op, "bias", bias_in, {dim});
  if (initial_state_in.defined())
    detail::check_shape(op, "initial_state", initial_state_in, {batch, dim, width - 1});
  if (detail::any_cpu_bf16({&x_in})) {
    auto w = detail::widen_bf16;
    return to_dtype(causal_conv1d(w(x_in), w(weight_in), w(bias_in), silu, w(initial_state_in)),
                    DType::BFloat16);
  }
  Tensor x = x_in.contiguous(), w = weight_in.contiguous();
  Tensor b = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor init = initial_state_in.defined() ? initial_state_in.detach().contiguous() : Tensor();
  kernels::cpu::ConvDims dims{batch, length, dim, width};
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  conv_forward(out, x, w, b, init, silu, dims);
  if (autograd::should_record({&x_in, &weight_in, &bias_in})) {
    autograd::record(op, {x_in, weight_in, bias_in}, {&out},
                     [x, w, b, init, silu, dims](const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].contiguous();
                       Tensor dx, dw, db;
                       if (ctx.needs_input_grad[0]) dx = Tensor::empty_like(x);
                       if (ctx.needs_input_grad[1]) dw = Tensor::empty_like(w);
                       if (ctx.needs_input_grad[2]) db = Tensor::empty_like(b);
                       conv_backward(dx, dw, db, dout, x, w, b, init, silu, dims);
                       return autograd::TensorList{dx, dw, db};
                     });
  }
  return out;
}

}  // namespace s6
