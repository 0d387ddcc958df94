// selective_scan as one tape node. It saves only its inputs: the backward kernel recomputes the
// states, so no (batch, length, channels, state) tensor is kept.
#include "autograd/tape.h"
#include "kernels/cpu/selective_scan.h"
#include "layers/op_checks.h"
#include "layers/ops.h"

namespace s6 {

ScanResult selective_scan_ex(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                             const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                             const Tensor& z_in, const Tensor& bias_in, const ScanOptions& options) {
  const char* op = "selective_scan";
  detail::check_same_float(op, {&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in,
                                &options.initial_state});
  detail::check_rank(op, "u (batch, length, channels)", u_in, 3);
  int64_t batch = u_in.size(0), length = u_in.size(1), dim = u_in.size(2);
  detail::check_rank(op, "A (channels, state)", A_in, 2);
  int64_t dstate = A_in.size(1);
  detail::check_shape(op, "delta", delta_in, u_in.shape());
  detail::check_shape(op, "A", A_in, {dim, dstate});
  detail::check_shape(op, "B", B_in, {batch, length, dstate});
  detail::check_shape(op, "C", C_in, {batch, length, dstate});
  if (D_in.defined()) detail::check_shape(op, "D", D_in, {dim});
  if (z_in.defined()) detail::check_shape(op, "z", z_in, u_in.shape());
  if (bias_in.defined()) detail::check_shape(op, "delta_bias", bias_in, {dim});
  if (options.initial_state.defined())
    detail::check_shape(op, "initial_state", options.initial_state, {batch, dim, dstate});
  detail::check_cpu(op, u_in);

  auto c = [](const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); };
  Tensor u = c(u_in), delta = c(delta_in), A = c(A_in), B = c(B_in), C = c(C_in), D = c(D_in),
         z = c(z_in), bias = c(bias_in), init = c(options.initial_state);
  kernels::cpu::ScanDims dims{batch, length, dim, dstate};
  bool softplus = options.delta_softplus;
  ScanResult result;
  result.out = Tensor::empty(u.shape(), u.dtype(), u.device());
  if (options.return_final_state) result.final_state = Tensor::empty({batch, dim, dstate}, u.dtype(), u.device());
  detail::dispatch_float(op, u.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::selective_scan_fwd<T>(
        result.out.data<T>(), result.final_state.defined() ? result.final_state.data<T>() : nullptr, u.data<T>(), delta.data<T>(),
        A.data<T>(), B.data<T>(), C.data<T>(), detail::ptr_or_null<T>(D), detail::ptr_or_null<T>(z),
        detail::ptr_or_null<T>(bias), softplus, detail::ptr_or_null<T>(init), dims);
  });
  if (autograd::should_record({&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in})) {
    autograd::record(
        op, {u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in}, {&result.out},
        [u, delta, A, B, C, D, z, bias, init, softplus, dims](const autograd::BackwardContext& ctx) {
          Tensor dout = ctx.grad_outputs[0].contiguous();
          const auto& need = ctx.needs_input_grad;
          auto grad_for = [&](size_t i, const Tensor& like) {
            return need[i] && like.defined() ? Tensor::empty_like(like) : Tensor();
          };
          Tensor du = grad_for(0, u), ddelta = grad_for(1, delta), dA = grad_for(2, A),
                 dB = grad_for(3, B), dC = grad_for(4, C), dD = grad_for(5, D), dz = grad_for(6, z),
                 dbias = grad_for(7, bias);
          detail::dispatch_float("selective_scan backward", u.dtype(), [&](auto tag) {
            using T = decltype(tag);
            auto out_ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
            kernels::cpu::selective_scan_bwd<T>(
                out_ptr(du), out_ptr(ddelta), out_ptr(dA), out_ptr(dB), out_ptr(dC), out_ptr(dD),
                out_ptr(dz), out_ptr(dbias), dout.data<T>(), u.data<T>(), delta.data<T>(), A.data<T>(),
                B.data<T>(), C.data<T>(), detail::ptr_or_null<T>(D), detail::ptr_or_null<T>(z),
                detail::ptr_or_null<T>(bias), softplus, detail::ptr_or_null<T>(init), dims);
          });
          return autograd::TensorList{du, ddelta, dA, dB, dC, dD, dz, dbias};
        });
  }
  return result;
}

Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                      const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                      bool delta_softplus) {
  ScanOptions options;
  options.delta_softplus = delta_softplus;
  return selective_scan_ex(u, delta, A, B, C, D, z, delta_bias, options).out;
}

}  // namespace s6
