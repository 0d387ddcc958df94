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

#ifdef S6_WITH_CUDA
namespace {
// CUDA path (widths 1-4): same contract as the CPU path; backward recomputes the pre-activation.
Tensor causal_conv1d_cuda(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in,
                          bool silu, const Tensor& initial_state_in) {
  const char* op = "causal_conv1d";
  Tensor x = x_in.contiguous(), w = weight_in.contiguous();
  Tensor b = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor init = initial_state_in.defined() ? initial_state_in.detach().contiguous() : Tensor();
  kernels::cpu::ConvDims dims{x.size(0), x.size(1), x.size(2), w.size(-1)};
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  detail::dispatch_cuda(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cuda::causal_conv1d_fwd<T>(out.data<T>(), x.data<T>(), w.data<T>(),
                                        detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init),
                                        silu, dims, cuda::current_stream());
  });
  if (autograd::should_record({&x_in, &weight_in, &bias_in})) {
    autograd::record(op, {x_in, weight_in, bias_in}, {&out},
                     [x, w, b, init, silu, dims](const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].contiguous();
                       Tensor dx, dw, db;
                       if (ctx.needs_input_grad[0]) dx = Tensor::empty_like(x);
                       if (ctx.needs_input_grad[1]) dw = Tensor::empty_like(w);
                       if (ctx.needs_input_grad[2]) db = Tensor::empty_like(b);
                       detail::dispatch_cuda("causal_conv1d backward", x.dtype(), [&](auto tag) {
                         using T = decltype(tag);
                         kernels::cuda::causal_conv1d_bwd<T>(
                             detail::mut_or_null<T>(dx), detail::mut_or_null<T>(dw),
                             detail::mut_or_null<T>(db), dout.data<T>(), x.data<T>(), w.data<T>(),
                             detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init), silu, dims,
                             cuda::current_stream());
                       });
                       return autograd::TensorList{dx, dw, db};
                     });
  }
  return out;
}
}  // namespace
#endif

Tensor causal_conv1d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, bool silu,
                     const Tensor& initial_state_in) {
  const char* op = "causal_conv1d";
  detail::check_same_float(op, {&x_in, &weight_in, &bias_in, &initial_state_in});
  detail::check_rank(op, "x (batch, length, channels)", x_in, 3);
  int64_t batch = x_in.size(0), length = x_in.size(1), dim = x_in.size(2);
  S6_CHECK((weight_in.dim() == 2 || (weight_in.dim() == 3 && weight_in.size(1) == 1)) &&
               weight_in.size(0) == dim,
           "{}: weight should be ({}, width) or ({}, 1, width) but is {}", op, dim, dim,
           weight_in.describe());
  int64_t width = weight_in.size(-1);
  S6_CHECK(width >= 1, "{}: weight {} has width 0", op, weight_in.describe());
  if (bias_in.defined()) detail::check_shape(op, "bias", bias_in, {dim});
  if (initial_state_in.defined())
    detail::check_shape(op, "initial_state", initial_state_in, {batch, dim, width - 1});
#ifdef S6_WITH_CUDA
  if (x_in.is_cuda()) return causal_conv1d_cuda(x_in, weight_in, bias_in, silu, initial_state_in);
#endif
  detail::check_cpu(op, x_in);

  Tensor x = x_in.contiguous(), w = weight_in.contiguous();
  Tensor b = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor init = initial_state_in.defined() ? initial_state_in.detach().contiguous() : Tensor();
  kernels::cpu::ConvDims dims{batch, length, dim, width};
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  detail::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::causal_conv1d_fwd<T>(out.data<T>(), x.data<T>(), w.data<T>(),
                                       detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init), silu,
                                       dims);
  });
  if (autograd::should_record({&x_in, &weight_in, &bias_in})) {
    autograd::record(op, {x_in, weight_in, bias_in}, {&out},
                     [x, w, b, init, silu, dims](const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].contiguous();
                       Tensor dx, dw, db;
                       if (ctx.needs_input_grad[0]) dx = Tensor::empty_like(x);
                       if (ctx.needs_input_grad[1]) dw = Tensor::empty_like(w);
                       if (ctx.needs_input_grad[2]) db = Tensor::empty_like(b);
                       detail::dispatch_float("causal_conv1d backward", x.dtype(), [&](auto tag) {
                         using T = decltype(tag);
                         kernels::cpu::causal_conv1d_bwd<T>(
                             dx.defined() ? dx.data<T>() : nullptr, dw.defined() ? dw.data<T>() : nullptr,
                             db.defined() ? db.data<T>() : nullptr, dout.data<T>(), x.data<T>(),
                             w.data<T>(), detail::ptr_or_null<T>(b), detail::ptr_or_null<T>(init), silu,
                             dims);
                       });
                       return autograd::TensorList{dx, dw, db};
                     });
  }
  return out;
}

}  // namespace s6
