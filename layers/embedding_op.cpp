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

#ifdef S6_WITH_CUDA
namespace {
// CUDA path. Ids are validated on the device (see detail::check_cuda_index_errors): a bad id
// gives a NaN row and is recorded for the next check instead of costing a host sync per call.
Tensor embedding_cuda(const Tensor& ids_in, const Tensor& weight_in) {
  Tensor ids = ids_in.contiguous(), w = weight_in.contiguous();
  int64_t vocab = w.size(0), width = w.size(1), count = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(width);
  Tensor out = Tensor::empty(out_shape, w.dtype(), w.device());
  int64_t* err = detail::cuda_index_error_buffer();
  detail::dispatch_index("embedding", ids, [&](auto itag) {
    using I = decltype(itag);
    detail::dispatch_cuda("embedding", w.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::embedding_fwd<T, I>(out.data<T>(), err, ids.data<I>(), w.data<T>(), count,
                                         vocab, width, cuda::current_stream());
    });
  });
  if (autograd::should_record({&weight_in})) {
    autograd::record("embedding", {ids_in, weight_in}, {&out},
                     [ids, vocab, width, dtype = w.dtype(), device = w.device()](
                         const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].contiguous();
                       Tensor dw = Tensor::empty({vocab, width}, dtype, device);
                       detail::dispatch_index("embedding backward", ids, [&](auto itag) {
                         using I = decltype(itag);
                         detail::dispatch_cuda("embedding backward", dtype, [&](auto tag) {
                           using T = decltype(tag);
                           kernels::cuda::embedding_bwd<T, I>(dw.data<T>(), dout.data<T>(),
                                                              ids.data<I>(), ids.numel(), vocab,
                                                              width, cuda::current_stream());
                         });
                       });
                       return autograd::TensorList{Tensor(), dw};
                     });
  }
  return out;
}
}  // namespace
#endif

Tensor embedding(const Tensor& ids_in, const Tensor& weight_in) {
  detail::check_rank("embedding", "weight", weight_in, 2);
  detail::check_same_float("embedding", {&weight_in});
  S6_CHECK(ids_in.device() == weight_in.device(), "embedding: ids {} and weight {} are on different devices",
           ids_in.describe(), weight_in.describe());
#ifdef S6_WITH_CUDA
  if (weight_in.is_cuda()) return embedding_cuda(ids_in, weight_in);
#endif
  detail::check_cpu("embedding", weight_in);
  Tensor ids = ids_in.contiguous(), w = weight_in.contiguous();
  int64_t vocab = w.size(0), width = w.size(1), count = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(width);
  Tensor out = Tensor::empty(out_shape, w.dtype(), w.device());
  detail::dispatch_index("embedding", ids, [&](auto itag) {
    using I = decltype(itag);
    const I* p = ids.data<I>();
    for (int64_t i = 0; i < count; ++i)
      S6_CHECK(p[i] >= 0 && p[i] < vocab, "embedding: token id {} at position {} is outside [0, {})",
               static_cast<int64_t>(p[i]), i, vocab);
    detail::dispatch_float("embedding", w.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::embedding_fwd<T, I>(out.data<T>(), p, w.data<T>(), count, width);
    });
  });
  if (autograd::should_record({&weight_in})) {
    autograd::record("embedding", {ids_in, weight_in}, {&out},
                     [ids, vocab, width, dtype = w.dtype(), device = w.device()](
                         const autograd::BackwardContext& ctx) {
                       Tensor dout = ctx.grad_outputs[0].contiguous();
                       Tensor dw = Tensor::empty({vocab, width}, dtype, device);
                       detail::dispatch_index("embedding backward", ids, [&](auto itag) {
                         using I = decltype(itag);
                         detail::dispatch_float("embedding backward", dtype, [&](auto tag) {
                           using T = decltype(tag);
                           kernels::cpu::embedding_bwd<T, I>(dw.data<T>(), dout.data<T>(),
                                                             ids.data<I>(), ids.numel(), vocab, width);
                         });
                       });
                       return autograd::TensorList{Tensor(), dw};
                     });
  }
  return out;
}

}  // namespace s6
