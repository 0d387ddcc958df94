// selective_scan as one tape node. It saves only its inputs (plus, on CUDA, the fp32 states entering
// every chunk of L and the plan that chose the chunks): the backward recomputes the states, so no
// (batch, length, channels, state) tensor is kept.
#include <algorithm>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "kernels/cpu/selective_scan.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#include "layers/scan_plan.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/selective_scan.h"
#endif

namespace s6 {

namespace {

// The CUDA kernel's dtype contract, which the CPU's bfloat16 path follows too: u, delta, B, C, z
// float32 or bfloat16 (one dtype, u's); A, D, delta_bias and initial_state float32; one device.
void check_kernel_dtypes(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                         const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                         const ScanOptions& options) {
  const char* op = "selective_scan";
  const DType io = u_in.dtype();
  const char* where = u_in.is_cuda() ? "CUDA" : "CPU";
  S6_CHECK(io == DType::Float32 || io == DType::BFloat16, "{}: the kernel takes float32 or bfloat16 u, not {}",
           op, u_in.describe());
  auto check_io = [&](const char* name, const Tensor& t) {
    if (!t.defined()) return;
    S6_CHECK(t.device() == u_in.device() && t.dtype() == io,
             "{}: {} must be a {} {} tensor like u ({}), got {}", op, name, where, dtype_name(io),
             u_in.describe(), t.describe());
  };
  auto check_f32 = [&](const char* name, const Tensor& t) {
    if (!t.defined()) return;
    S6_CHECK(t.device() == u_in.device() && t.dtype() == DType::Float32,
             "{}: {} must be a float32 {} tensor (the state and its parameters stay float32), got {}", op, name,
             where, t.describe());
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

// The row stride the CUDA kernels can read B and C with in place: the same for both (column
// blocks of x_proj's output); else 0 (they are copied).
int64_t shared_row_stride(const Tensor& B, const Tensor& C) {
  const int64_t ld = detail::uniform_row_stride(B);
  return ld && detail::uniform_row_stride(C) == ld ? ld : 0;
}

kernels::ScanDType scan_dtype(DType dtype) {
  switch (dtype) {
    case DType::Float32: return kernels::ScanDType::Float32;
    case DType::BFloat16: return kernels::ScanDType::BFloat16;
    case DType::Float64: return kernels::ScanDType::Float64;
    default: S6_FAIL("selective_scan: no kernel takes {} inputs", dtype_name(dtype));
  }
}

const void* cptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// What one call reads, as the kernels take it (contiguous, or B and C in place with a row stride)
// and as the tape node saves it. chunk_states: the CUDA forward's, for its backward.
struct ScanSaved {
  Tensor u, delta, A, B, C, D, z, bias, init, chunk_states;
  kernels::ScanDims dims;
  kernels::ScanPlan plan;
  int64_t bc_row_stride = 0;
  bool softplus = true;

  void fill(kernels::ScanParams& p, const Tensor& workspace) const {
    p.dims = dims;
    p.dtype = scan_dtype(u.dtype());
    p.delta_softplus = softplus;
    p.bc_row_stride = bc_row_stride;
    p.u = cptr(u), p.delta = cptr(delta), p.A = cptr(A), p.B = cptr(B), p.C = cptr(C);
    p.D = cptr(D), p.z = cptr(z), p.delta_bias = cptr(bias), p.initial_state = cptr(init);
    p.chunk_states = chunk_states.defined() ? chunk_states.data<float>() : nullptr;
    p.workspace = workspace.defined() ? workspace.data<float>() : nullptr;
    p.stream = u.is_cuda() ? cuda::current_stream() : nullptr;
  }
};

#ifdef S6_WITH_CUDA
Tensor f32_workspace(int64_t floats) {
  return Tensor::empty({std::max<int64_t>(floats, 1)}, DType::Float32, Device::CUDA);
}
#endif

// The kernel calls, by device; everything around them (checks, recording) is shared.
void scan_forward(const ScanSaved& s, const Tensor& out, const Tensor& final_state) {
  kernels::ScanParams p;
#ifdef S6_WITH_CUDA
  if (s.u.is_cuda()) {
    const Tensor ws = f32_workspace(kernels::cuda::scan_fwd_workspace_floats(s.dims, s.plan));
    s.fill(p, ws);
    p.out = mptr(out), p.final_state = mptr(final_state);
    kernels::cuda::selective_scan_fwd(p, s.plan);
    return;
  }
#endif
  s.fill(p, Tensor());
  p.out = mptr(out), p.final_state = mptr(final_state);
  detail::dispatch_float("selective_scan", s.u.dtype(),
                         [&](auto tag) { kernels::cpu::selective_scan_fwd<decltype(tag)>(p); });
}

void scan_backward(const ScanSaved& s, const Tensor& dout, const autograd::TensorList& grads) {
  kernels::ScanGradParams g;
  auto set_grads = [&] {
    g.dout = dout.data_ptr();
    g.du = mptr(grads[0]), g.ddelta = mptr(grads[1]), g.dA = mptr(grads[2]);
    g.dB = mptr(grads[3]), g.dC = mptr(grads[4]), g.dD = mptr(grads[5]), g.dz = mptr(grads[6]);
    g.ddelta_bias = mptr(grads[7]);
  };
#ifdef S6_WITH_CUDA
  if (s.u.is_cuda()) {
    const Tensor ws = f32_workspace(kernels::cuda::scan_bwd_workspace_floats(s.dims, s.plan));
    s.fill(g, ws);
    set_grads();
    kernels::cuda::selective_scan_bwd(g, s.plan);
    return;
  }
#endif
  s.fill(g, Tensor());
  set_grads();
  detail::dispatch_float("selective_scan backward", s.u.dtype(),
                         [&](auto tag) { kernels::cpu::selective_scan_bwd<decltype(tag)>(g); });
}

}  // namespace

ScanResult selective_scan_ex(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                             const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                             const ScanOptions& options) {
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
    check_kernel_dtypes(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, options);
    S6_CHECK(dstate >= 1 && dstate <= kernels::cuda::kScanMaxDState,
             "{}: the CUDA kernel supports dstate 1..{}, got {}", op, kernels::cuda::kScanMaxDState, dstate);
#else
    S6_FAIL("{}: {} is on CUDA but s6 was built without CUDA", op, u_in.describe());
#endif
  } else if (detail::any_cpu_bf16({&u_in})) {  // the CUDA dtype contract, computed in float32
    check_kernel_dtypes(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, options);
    auto w = detail::widen_bf16;
    ScanResult wide = selective_scan_ex(w(u_in), w(delta_in), A_in, w(B_in), w(C_in), D_in, w(z_in), bias_in,
                                        options);
    wide.out = to_dtype(wide.out, DType::BFloat16);
    return wide;  // the final state stays float32, as on CUDA
  } else {
    detail::check_same_float(
        op, {&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in, &options.initial_state});
    detail::check_cpu(op, u_in);
  }

  const Device device = u_in.device();
  auto c = [](const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); };
  ScanSaved s;
  s.dims = {batch, length, dim, dstate};
  s.plan = plan_scan(s.dims, device,
                     options.plan_overrides ? *options.plan_overrides : scan_plan_overrides_from_env());
  s.softplus = options.delta_softplus;
  s.bc_row_stride = device == Device::CUDA ? shared_row_stride(B_in, C_in) : 0;
  s.u = c(u_in), s.delta = c(delta_in), s.A = c(A_in), s.D = c(D_in), s.z = c(z_in);
  s.bias = c(bias_in), s.init = c(options.initial_state);
  s.B = s.bc_row_stride ? B_in.detach() : c(B_in);
  s.C = s.bc_row_stride ? C_in.detach() : c(C_in);
  // The final state is float32 on CUDA whatever u is (the CPU reference keeps u's dtype).
  const DType state_dtype = device == Device::CUDA ? DType::Float32 : u_in.dtype();
  ScanResult result;
  result.out = Tensor::empty(s.u.shape(), s.u.dtype(), device);
#ifdef S6_WITH_CUDA
  if (device == Device::CUDA && length == 1 && options.return_final_state &&
      !autograd::should_record({&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in})) {
    // One token of recurrent decoding: the step kernel advances a copy of the state in place.
    result.final_state = s.init.defined() ? s.init.clone()
                                          : Tensor::zeros({batch, dim, dstate}, DType::Float32, device);
    const Tensor Bc = s.B.contiguous(), Cc = s.C.contiguous();
    const kernels::ScanDType kd = scan_dtype(s.u.dtype());
    kernels::cuda::selective_scan_step(mptr(result.out), result.final_state.data<float>(), cptr(s.u),
                                       cptr(s.delta), s.A.data<float>(), cptr(Bc), cptr(Cc),
                                       s.D.defined() ? s.D.data<float>() : nullptr, cptr(s.z),
                                       s.bias.defined() ? s.bias.data<float>() : nullptr, s.softplus, batch,
                                       dim, dstate, kd, cuda::current_stream());
    return result;
  }
#endif
  if (options.return_final_state) result.final_state = Tensor::empty({batch, dim, dstate}, state_dtype, device);
#ifdef S6_WITH_CUDA
  if (device == Device::CUDA)
    s.chunk_states = Tensor::empty({batch, kernels::cuda::scan_num_chunks(length, s.plan.chunk), dim, dstate},
                                   DType::Float32, device);
#endif
  scan_forward(s, result.out, result.final_state);
  if (autograd::should_record({&u_in, &delta_in, &A_in, &B_in, &C_in, &D_in, &z_in, &bias_in})) {
    if (device == Device::CUDA) s.init = Tensor();  // the chunk states include it
    autograd::record(op, {u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in}, {&result.out},
                     [s](const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].to(s.u.device()).to(s.u.dtype()).contiguous();
                       const auto& need = ctx.needs_input_grad;
                       auto grad_for = [&](size_t i, const Tensor& like) {
                         return need[i] && like.defined() ? Tensor::empty_like(like) : Tensor();
                       };
                       autograd::TensorList grads{grad_for(0, s.u), grad_for(1, s.delta), grad_for(2, s.A),
                                                  grad_for(3, s.B), grad_for(4, s.C),     grad_for(5, s.D),
                                                  grad_for(6, s.z), grad_for(7, s.bias)};
                       scan_backward(s, dout, grads);
                       return grads;
                     });
  }
  return result;
}

Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                      const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus) {
  ScanOptions options;
  options.delta_softplus = delta_softplus;
  return selective_scan_ex(u, delta, A, B, C, D, z, delta_bias, options).out;
}

}  // namespace s6
