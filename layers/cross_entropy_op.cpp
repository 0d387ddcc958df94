// cross_entropy(logits, targets) as one fused node: backward recomputes the softmax.
#include "autograd/tape.h"
#include "kernels/cpu/cross_entropy.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/cross_entropy.h"
#endif

namespace s6 {

#ifdef S6_WITH_CUDA
namespace {
// CUDA path: no host sync. The loss, the counted rows and the per-row log-sum-exp stay on the
// device; backward reads the count and the incoming gradient there. Bad targets are validated on
// the device (NaN loss + detail::check_cuda_index_errors) rather than copied to the host.
Tensor cross_entropy_cuda(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index) {
  Tensor logits = logits_in.contiguous(), targets = targets_in.contiguous();
  int64_t rows = logits.size(0), vocab = logits.size(1);
  S6_CHECK(vocab > 0, "cross_entropy: logits {} have no classes", logits.describe());
  Tensor loss = Tensor::empty({}, DType::Float32, logits.device());  // float32 for bf16 logits too
  Tensor counted = Tensor::empty({1}, DType::Int32, logits.device());
  Tensor lse = Tensor::empty({rows}, DType::Float32, logits.device());
  int64_t* err = detail::cuda_index_error_buffer();
  detail::dispatch_index("cross_entropy", targets, [&](auto itag) {
    using I = decltype(itag);
    detail::dispatch_cuda("cross_entropy", logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::cross_entropy_fwd<T, I>(loss.data<float>(), counted.data<int32_t>(), lse.data<float>(),
                                             err, logits.data<T>(), targets.data<I>(), rows, vocab,
                                             ignore_index, cuda::current_stream());
    });
  });
  if (autograd::should_record({&logits_in})) {
    autograd::record("cross_entropy", {logits_in, targets_in}, {&loss},
                     [logits, targets, lse, counted, ignore_index](const autograd::BackwardContext& ctx) {
                       Tensor g = ctx.grad_outputs[0].to(DType::Float32).contiguous();
                       Tensor dlogits = Tensor::empty_like(logits);
                       detail::dispatch_index("cross_entropy backward", targets, [&](auto itag) {
                         using I = decltype(itag);
                         detail::dispatch_cuda("cross_entropy backward", logits.dtype(), [&](auto tag) {
                           using T = decltype(tag);
                           kernels::cuda::cross_entropy_bwd<T, I>(
                               dlogits.data<T>(), logits.data<T>(), targets.data<I>(), lse.data<float>(),
                               g.data<float>(), counted.data<int32_t>(), logits.size(0), logits.size(1),
                               ignore_index, cuda::current_stream());
                         });
                       });
                       return autograd::TensorList{dlogits, Tensor()};
                     });
  }
  return loss;
}
}  // namespace
#endif

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index) {
  detail::check_rank("cross_entropy", "logits", logits_in, 2);
  detail::check_same_float("cross_entropy", {&logits_in});
  detail::check_rank("cross_entropy", "targets", targets_in, 1);
  S6_CHECK(targets_in.size(0) == logits_in.size(0), "cross_entropy: {} targets for {} rows of logits {}",
           targets_in.size(0), logits_in.size(0), logits_in.describe());
#ifdef S6_WITH_CUDA
  if (logits_in.is_cuda()) {
    S6_CHECK(targets_in.is_cuda(), "cross_entropy: logits {} are on CUDA but targets {} are not",
             logits_in.describe(), targets_in.describe());
    return cross_entropy_cuda(logits_in, targets_in, ignore_index);
  }
#endif
  detail::check_cpu("cross_entropy", logits_in);
  // bf16 logits: softmax in float32; the loss is float32 on both devices.
  if (detail::any_cpu_bf16({&logits_in}))
    return cross_entropy(detail::widen_bf16(logits_in), targets_in, ignore_index);
  Tensor logits = logits_in.contiguous(), targets = targets_in.contiguous();
  int64_t rows = logits.size(0), vocab = logits.size(1), counted = 0;
  double total = 0;
  detail::dispatch_index("cross_entropy", targets, [&](auto itag) {
    using I = decltype(itag);
    const I* t = targets.data<I>();
    for (int64_t r = 0; r < rows; ++r)
      S6_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < vocab),
               "cross_entropy: target {} at row {} is outside [0, {}) and is not the ignore index {}",
               static_cast<int64_t>(t[r]), r, vocab, ignore_index);
    detail::dispatch_float("cross_entropy", logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      total = kernels::cpu::cross_entropy_fwd<T, I>(logits.data<T>(), t, rows, vocab, ignore_index, &counted);
    });
  });
  double loss_value = counted > 0 ? total / static_cast<double>(counted) : 0.0;
  Tensor loss = Tensor::full({}, loss_value, logits.dtype(), logits.device());
  if (autograd::should_record({&logits_in})) {
    autograd::record("cross_entropy", {logits_in, targets_in}, {&loss},
                     [logits, targets, ignore_index, counted](const autograd::BackwardContext& ctx) {
                       double g = ctx.grad_outputs[0].item();
                       double scale = counted > 0 ? g / static_cast<double>(counted) : 0.0;
                       Tensor dlogits = Tensor::empty_like(logits);
                       detail::dispatch_index("cross_entropy backward", targets, [&](auto itag) {
                         using I = decltype(itag);
                         detail::dispatch_float("cross_entropy backward", logits.dtype(), [&](auto tag) {
                           using T = decltype(tag);
                           kernels::cpu::cross_entropy_bwd<T, I>(dlogits.data<T>(), logits.data<T>(),
                                                                 targets.data<I>(), logits.size(0),
                                                                 logits.size(1), ignore_index, scale);
                         });
                       });
                       return autograd::TensorList{dlogits, Tensor()};
                     });
  }
  return loss;
}

}  // namespace s6
