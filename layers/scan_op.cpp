// selective_scan as one tape node. It saves only its inputs (plus, on CUDA, the fp32 states entering
// every chunk of L): the backward recomputes the states, so no (batch, length, channels, state)
// tensor is kept.
#include <algorithm>

#include "autograd/tape.h"
#include "kernels/cpu/selective_scan.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/selective_scan.h"
#endif

namespace s6 {

namespace {

// The CUDA kernel's dtype contract, which the CPU's bfloat16 path follows too: u, delta, B, C, z
// float32 or bfloat16 (one dtype, u's); A, D, delta_bias and initial_state float32; one device.
void check_kernel_dtypes(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                         const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                         const Tensor& z_in, const Tensor& bias_in, const ScanOptions& options) {
  const char* op = "selective_scan";
  const DType io = u_in.dtype();
  const char* where = u_in.is_cuda() ? "CUDA" : "CPU";
  S6_CHECK(io == DType::Float32 || io == DType::BFloat16,
           "{}: the kernel takes float32 or bfloat16 u, not {}", op, u_in.describe());
  auto check_io = [&](const char* name, const Tensor& t) {
    if (!t.defined()) return;
    S6_CHECK(t.device() == u_in.device() && t.dtype() == io,
             "{}: {} must be a {} {} tensor like u ({}), got {}", op, name, where, dtype_name(io),
             u_in.describe(), t.describe());
  };
  auto check_f32 = [&](const char* name, const Tensor& t) {
    if (!t.defined()) return;
    S6_CHECK(t.device() == u_in.device() && t.dtype() == DType::Float32,
             "{}: {} must be a float32 {} tensor (the state and its parameters stay float32), got {}",
             op, name, where, t.describe());
  };
  check_io("delta", delta_in);
  check_io("B", B_in);
  check_io("C", C_in);
  check_io("z", z_in);
  check_f32("A", A_in);
  check_f32("D", D_in);
  check_f32("delta_bias", bias_in);
  check_f32("initial_state", options.initial_state);
}

}  // namespace

#ifdef S6_WITH_CUDA
namespace {

// The row stride the kernels can read B and C with in place: the same for both (column blocks
// of x_proj's output); else 0 (they are copied).
int64_t shared_row_stride(const Tensor& B, const Tensor& C) {
  const int64_t ld = detail::uniform_row_stride(B);
  return ld && detail::uniform_row_stride(C) == ld ? ld : 0;
}

// CUDA path: u, delta, B, C, z float32 or bfloat16 (one dtype); A, D, delta_bias and
// initial_state float32; everything on the device. Saves its inputs and the chunk-boundary states
// (batch, n_chunks, dim, dstate); the backward recomputes the states inside each chunk.
ScanResult selective_scan_cuda(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                               const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                               const Tensor& z_in, const Tensor& bias_in,
                               const ScanOptions& options) {
  const char* op = "selective_scan";
  namespace kc = kernels::cuda;
  check_kernel_dtypes(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, options);
  const DType io = u_in.dtype();
  const int64_t batch = u_in.size(0), length = u_in.size(1), dim = u_in.size(2),
                dstate = A_in.size(1);
  S6_CHECK(dstate >= 1 && dstate <= kc::kScanMaxDState,
           "{}: the CUDA kernel supports dstate 1..{}, got {}", op, kc::kScanMaxDState, dstate);

  auto c = [](const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); };
  const int64_t ldbc = shared_row_stride(B_in, C_in);
  Tensor u = c(u_in), delta = c(delta_in), A = c(A_in), D = c(D_in), z = c(z_in), bias = c(bias_in),
         init = c(options.initial_state);
  Tensor B = ldbc ? B_in.detach() : c(B_in), C = ldbc ? C_in.detach() : c(C_in);
  const bool softplus = options.delta_softplus;
  const kc::ScanDType kd = io == DType::Float32 ? kc::ScanDType::Float32 : kc::ScanDType::BFloat16;
  auto fptr = [](const Tensor& t) -> const float* { return t.defined() ? t.data<float>() : nullptr; };
  auto vptr = [](const Tensor& t) -> const void* { return t.defined() ? t.data_ptr() : nullptr; };
  auto f32 = [](int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::Float32, Device::CUDA); };

  ScanResult result;
  result.out = Tensor::empty(u.shape(), io, Device::CUDA);
  if (length == 1 && options.return_final_state &&
      !autograd::should_record({&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in})) {
    // One token of recurrent decoding: the step kernel advances a copy of the state in place.
    result.final_state = init.defined() ? init.clone() : Tensor::zeros({batch, dim, dstate}, DType::Float32, Device::CUDA);
    Tensor Bc = B.contiguous(), Cc = C.contiguous();
    kc::selective_scan_step(result.out.data_ptr(), result.final_state.data<float>(), u.data_ptr(), delta.data_ptr(),
                            A.data<float>(), Bc.data_ptr(), Cc.data_ptr(), fptr(D), vptr(z), fptr(bias), softplus,
                            batch, dim, dstate, kd, cuda::current_stream());
    return result;
  }
  if (options.return_final_state)
    result.final_state = Tensor::empty({batch, dim, dstate}, DType::Float32, Device::CUDA);
  Tensor states = Tensor::empty({batch, kc::scan_num_chunks(batch, length, dim, dstate), dim, dstate},
                                DType::Float32, Device::CUDA);
  {
    Tensor ws = f32(kc::scan_fwd_workspace_floats(batch, length, dim, dstate));
    kc::selective_scan_fwd(result.out.data_ptr(),
                           result.final_state.defined() ? result.final_state.data<float>() : nullptr,
                           states.data<float>(), ws.data<float>(), u.data_ptr(), delta.data_ptr(),
                           A.data<float>(), B.data_ptr(), C.data_ptr(), fptr(D), vptr(z), fptr(bias),
                           fptr(init), softplus, batch, length, dim, dstate, kd,
                           cuda::current_stream(), ldbc);
  }
  if (autograd::should_record({&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in})) {
    autograd::record(
        op, {u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in}, {&result.out},
        [u, delta, A, B, C, D, z, bias, states, softplus, kd, batch, length, dim, dstate, ldbc, fptr,
         vptr, f32](const autograd::BackwardContext& ctx) {
          Tensor dout = ctx.grad_outputs[0].to(Device::CUDA).to(u.dtype()).contiguous();
          const auto& need = ctx.needs_input_grad;
          auto grad_for = [&](size_t i, const Tensor& like) {
            return need[i] && like.defined() ? Tensor::empty_like(like) : Tensor();
          };
          Tensor du = grad_for(0, u), ddelta = grad_for(1, delta), dA = grad_for(2, A),
                 dB = grad_for(3, B), dC = grad_for(4, C), dD = grad_for(5, D), dz = grad_for(6, z),
                 dbias = grad_for(7, bias);
          auto mf = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
          auto mv = [](const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; };
          Tensor ws = f32(kc::scan_bwd_workspace_floats(batch, length, dim, dstate));
          kc::selective_scan_bwd(mv(du), mv(ddelta), mf(dA), mv(dB), mv(dC), mf(dD), mv(dz),
                                 mf(dbias), ws.data<float>(), dout.data_ptr(), u.data_ptr(),
                                 delta.data_ptr(), A.data<float>(), B.data_ptr(), C.data_ptr(),
                                 fptr(D), vptr(z), fptr(bias), states.data<float>(), softplus,
                                 batch, length, dim, dstate, kd, cuda::current_stream(), ldbc);
          return autograd::TensorList{du, ddelta, dA, dB, dC, dD, dz, dbias};
        });
  }
  return result;
}

}  // namespace
#endif

ScanResult selective_scan_ex(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                             const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                             const Tensor& z_in, const Tensor& bias_in, const ScanOptions& options) {
  const char* op = "selective_scan";
  detail::check_rank(op, "u (batch, length, channels)", u_in, 3);
  detail::check_rank(op, "A (channels, state)", A_in, 2);
  const int64_t batch = u_in.size(0), length = u_in.size(1), dim = u_in.size(2), dstate = A_in.size(1);
  detail::check_shape(op, "delta", delta_in, u_in.shape());
  detail::check_shape(op, "A", A_in, {dim, dstate});
  detail::check_shape(op, "B", B_in, {batch, length, dstate});
  detail::check_shape(op, "C", C_in, {batch, length, dstate});
  if (D_in.defined()) detail::check_shape(op, "D", D_in, {dim});
  if (z_in.defined()) detail::check_shape(op, "z", z_in, u_in.shape());
  if (bias_in.defined()) detail::check_shape(op, "delta_bias", bias_in, {dim});
  if (options.initial_state.defined())
    detail::check_shape(op, "initial_state", options.initial_state, {batch, dim, dstate});
  if (u_in.is_cuda()) {
#ifdef S6_WITH_CUDA
    return selective_scan_cuda(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, options);
#else
    S6_FAIL("{}: {} is on CUDA but s6 was built without CUDA", op, u_in.describe());
#endif
  }
  if (detail::any_cpu_bf16({&u_in})) {  // the CUDA dtype contract, computed in float32
    check_kernel_dtypes(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, options);
    auto w = detail::widen_bf16;
    ScanResult wide = selective_scan_ex(w(u_in), w(delta_in), A_in, w(B_in), w(C_in), D_in, w(z_in),
                                        bias_in, options);
    wide.out = to_dtype(wide.out, DType::BFloat16);
    return wide;  // the final state stays float32, as on CUDA
  }
  detail::check_same_float(op, {&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in,
                                &options.initial_state});
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
