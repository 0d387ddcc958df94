// Differentiable shape ops: views where the layout allows, copies otherwise.
#include "autograd/tape.h"
#include "layers/op_checks.h"
#include "layers/ops.h"

namespace s6 {

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor out = x.detach().contiguous().view(shape);
  if (autograd::should_record({&x})) {
    autograd::record("reshape", {x}, {&out}, [in_shape = x.shape()](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{ctx.grad_outputs[0].detach().contiguous().view(in_shape)};
    });
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  Tensor out = x.transpose(d0, d1);
  if (autograd::should_record({&x})) {
    autograd::record("transpose", {x}, {&out}, [d0, d1](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{ctx.grad_outputs[0].detach().transpose(d0, d1)};
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim_in) {
  int64_t dim = wrap_dim(dim_in, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  S6_CHECK(total == x.size(dim), "split: sizes sum to {} but dim {} of {} is {}", total, dim_in, x.describe(),
           x.size(dim));
  std::vector<Tensor> outs;
  int64_t start = 0;
  for (int64_t s : sizes) {
    outs.push_back(x.narrow(dim, start, s));
    start += s;
  }
  if (autograd::should_record({&x})) {
    std::vector<Tensor*> out_ptrs;
    for (Tensor& o : outs) out_ptrs.push_back(&o);
    autograd::record("split", {x}, out_ptrs,
                     [sizes, dim, shape = x.shape(), dtype = x.dtype(),
                      device = x.device()](const autograd::BackwardContext& ctx) {
                       bool all = true;  // every part has a gradient: one concatenation
                       for (const Tensor& g : ctx.grad_outputs)
                         all = all && g.defined() && g.dtype() == dtype && g.device() == device;
                       if (all) return autograd::TensorList{Tensor::concat(ctx.grad_outputs, dim)};
                       Tensor dx = Tensor::zeros(shape, dtype, device);
                       int64_t offset = 0;
                       for (size_t k = 0; k < sizes.size(); ++k) {
                         if (ctx.grad_outputs[k].defined())
                           dx.narrow(dim, offset, sizes[k]).copy_(ctx.grad_outputs[k]);
                         offset += sizes[k];
                       }
                       return autograd::TensorList{dx};
                     });
  }
  return outs;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int64_t d = wrap_dim(dim, x.dim());
  std::vector<int64_t> sizes;
  if (start > 0) sizes.push_back(start);
  sizes.push_back(length);
  S6_CHECK(start >= 0 && length >= 0 && start + length <= x.size(d),
           "narrow(dim {}, start {}, length {}) is outside {}", dim, start, length, x.describe());
  if (x.size(d) - start - length > 0) sizes.push_back(x.size(d) - start - length);
  return split(x, sizes, d)[start > 0 ? 1 : 0];
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = x.detach().contiguous();
  if (autograd::should_record({&x})) {
    autograd::record("contiguous", {x}, {&out}, [](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{ctx.grad_outputs[0]};
    });
  }
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor out = x.expand(shape);
  if (autograd::should_record({&x})) {
    autograd::record("expand", {x}, {&out}, [in_shape = x.shape()](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{sum_to_shape(ctx.grad_outputs[0].detach(), in_shape)};
    });
  }
  return out;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = x.detach().to(dtype);
  if (autograd::should_record({&x})) {
    autograd::record("to_dtype", {x}, {&out}, [from = x.dtype()](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{ctx.grad_outputs[0].detach().to(from)};
    });
  }
  return out;
}

}  // namespace s6
