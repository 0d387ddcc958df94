// embedding(ids, weight) as one tape node; ids are validated so a bad token names itself.
#include "autograd/tape.h"
#include "kernels/cpu/embedding.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/embedding.h"
#endif

namespace s6 {

namespace {

// The kernel calls, by device. On the CPU bad ids throw here, naming the id; on CUDA they are
// checked on the device (detail::check_cuda_index_errors): a bad id gives a NaN row and is
// recorded for the next check instead of costing a host sync per call.
void lookup(const Tensor& out, const Tensor& ids, const Tensor& w) {
  const int64_t vocab = w.size(0), width = w.size(1), count = ids.numel();
  detail::dispatch_index("embedding", ids, [&](auto itag) {
    using I = decltype(itag);
    const I* p = ids.data<I>();
#ifdef S6_WITH_CUDA
    if (w.is_cuda()) {
      detail::dispatch_cuda("embedding", w.dtype(), [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::embedding_fwd<T, I>(out.data<T>(), detail::cuda_index_error_buffer(), p, w.data<T>(),
                                           count, vocab, width, cuda::current_stream());
      });
      return;
    }
#endif
    for (int64_t i = 0; i < count; ++i)
      S6_CHECK(p[i] >= 0 && p[i] < vocab, "embedding: token id {} at position {} is outside [0, {})",
               static_cast<int64_t>(p[i]), i, vocab);
    detail::dispatch_float("embedding", w.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::embedding_fwd<T, I>(out.data<T>(), p, w.data<T>(), count, width);
    });
  });
}

void scatter_grad(const Tensor& dw, const Tensor& dout, const Tensor& ids) {
  const int64_t vocab = dw.size(0), width = dw.size(1);
  detail::dispatch_index("embedding backward", ids, [&](auto itag) {
    using I = decltype(itag);
#ifdef S6_WITH_CUDA
    if (dw.is_cuda()) {
      detail::dispatch_cuda("embedding backward", dw.dtype(), [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::embedding_bwd<T, I>(dw.data<T>(), dout.data<T>(), ids.data<I>(), ids.numel(), vocab,
                                           width, cuda::current_stream());
      });
      return;
    }
#endif
    detail::dispatch_float("embedding backward", dw.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::embedding_bwd<T, I>(dw.data<T>(), dout.data<T>(), ids.data<I>(), ids.numel(), vocab, width);
    });
  });
}

}  // namespace

Tensor embedding(const Tensor& ids_in, const Tensor& weight_in) {
  detail::check_rank("embedding", "weight", weight_in, 2);
  detail::check_same_float("embedding", {&weight_in});
  S6_CHECK(ids_in.device() == weight_in.device(), "embedding: ids {} and weight {} are on different devices",
           ids_in.describe(), weight_in.describe());
  if (detail::any_cpu_bf16({&weight_in}))
    return to_dtype(embedding(ids_in, detail::widen_bf16(weight_in)), DType::BFloat16);
  Tensor ids = ids_in.contiguous(), w = weight_in.contiguous();
  Shape out_shape = ids.shape();
  out_shape.push_back(w.size(1));
  Tensor out = Tensor::empty(out_shape, w.dtype(), w.device());
  lookup(out, ids, w);
  if (autograd::should_record({&weight_in})) {
    autograd::record(
        "embedding", {ids_in, weight_in}, {&out},
        [ids, shape = w.shape(), dtype = w.dtype(), device = w.device()](const autograd::BackwardContext& ctx) {
          Tensor dw = Tensor::empty(shape, dtype, device);
          scatter_grad(dw, ctx.grad_outputs[0].contiguous(), ids);
          return autograd::TensorList{Tensor(), dw};
        });
  }
  return out;
}

}  // namespace s6
