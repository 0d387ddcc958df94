// Differentiable elementwise ops and reductions. Binary ops broadcast; sum_to_shape undoes it.
#include "autograd/tape.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reduce.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/elementwise.h"
#endif

namespace s6 {

namespace {

using kernels::cpu::Binary;
using kernels::cpu::Unary;

Shape broadcast_shape(const char* op, const Tensor& a, const Tensor& b) {
  size_t rank = std::max(a.shape().size(), b.shape().size());
  Shape out(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.shape().size() ? 1 : a.shape()[i - (rank - a.shape().size())];
    int64_t db = i < rank - b.shape().size() ? 1 : b.shape()[i - (rank - b.shape().size())];
    S6_CHECK(da == db || da == 1 || db == 1, "{}: shapes of {} and {} do not broadcast", op, a.describe(),
             b.describe());
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary_forward(Binary op, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
#ifdef S6_WITH_CUDA
  if (a.is_cuda()) {
    detail::dispatch_cuda_elementwise("binary op", a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::binary_fwd<T>(op, out.data<T>(), a.data<T>(), b.data<T>(), out.numel(),
                                   cuda::current_stream());
    });
    return out;
  }
#endif
  detail::dispatch_float("binary op", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::binary_fwd<T>(op, out.data<T>(), a.data<T>(), b.data<T>(), out.numel());
  });
  return out;
}

Tensor binary(const char* name, Binary op, const Tensor& a_in, const Tensor& b_in) {
  detail::check_same_float(name, {&a_in, &b_in});
  Shape shape = broadcast_shape(name, a_in, b_in);
  Tensor a = a_in.expand(shape).contiguous(), b = b_in.expand(shape).contiguous();
  Tensor out = binary_forward(op, a, b);
  if (autograd::should_record({&a_in, &b_in})) {
    Tensor a_saved = op == Binary::Mul ? a : Tensor(), b_saved = op == Binary::Mul ? b : Tensor();
    autograd::record(name, {a_in, b_in}, {&out},
                     [op, a_saved, b_saved, a_shape = a_in.shape(),
                      b_shape = b_in.shape()](const autograd::BackwardContext& ctx) {
                       const Tensor& g = ctx.grad_outputs[0];
                       Tensor da, db;
                       if (ctx.needs_input_grad[0]) {
                         Tensor full = op == Binary::Mul ? binary_forward(Binary::Mul, g.contiguous(), b_saved)
                                                         : g;
                         da = sum_to_shape(full, a_shape);
                       }
                       if (ctx.needs_input_grad[1]) {
                         Tensor full = op == Binary::Mul ? binary_forward(Binary::Mul, g.contiguous(), a_saved)
                                       : op == Binary::Sub ? scale(g.detach(), -1.0)
                                                           : g;
                         db = sum_to_shape(full, b_shape);
                       }
                       return autograd::TensorList{da, db};
                     });
  }
  return out;
}

Tensor unary_forward(Unary op, const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda_elementwise("unary op", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::unary_fwd<T>(op, out.data<T>(), x.data<T>(), x.numel(), cuda::current_stream());
    });
    return out;
  }
#endif
  detail::dispatch_float("unary op", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::unary_fwd<T>(op, out.data<T>(), x.data<T>(), x.numel());
  });
  return out;
}

Tensor unary(const char* name, Unary op, const Tensor& x_in) {
  detail::check_same_float(name, {&x_in});
  Tensor x = x_in.contiguous();
  Tensor out = unary_forward(op, x);
  if (autograd::should_record({&x_in})) {
    autograd::record(name, {x_in}, {&out}, [op, x](const autograd::BackwardContext& ctx) {
      Tensor g = ctx.grad_outputs[0].contiguous();
      Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
#ifdef S6_WITH_CUDA
      if (x.is_cuda()) {
        detail::dispatch_cuda_elementwise("unary backward", x.dtype(), [&](auto tag) {
          using T = decltype(tag);
          kernels::cuda::unary_bwd<T>(op, dx.data<T>(), g.data<T>(), x.data<T>(), x.numel(),
                                      cuda::current_stream());
        });
        return autograd::TensorList{dx};
      }
#endif
      detail::dispatch_float("unary backward", x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::unary_bwd<T>(op, dx.data<T>(), g.data<T>(), x.data<T>(), x.numel());
      });
      return autograd::TensorList{dx};
    });
  }
  return out;
}

}  // namespace

Tensor sum_to_shape(const Tensor& g_in, const Shape& shape) {
  if (g_in.shape() == shape) return g_in;
  S6_CHECK(shape.size() <= g_in.shape().size(), "sum_to_shape: {} cannot be reduced to {}", g_in.describe(),
           shape_str(shape));
  Tensor g = g_in.contiguous();
  Shape padded(g.shape().size() - shape.size(), 1);
  padded.insert(padded.end(), shape.begin(), shape.end());
  for (size_t d = 0; d < padded.size(); ++d)
    S6_CHECK(padded[d] == 1 || padded[d] == g.shape()[d], "sum_to_shape: {} cannot be reduced to {}",
             g.describe(), shape_str(shape));
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
#ifdef S6_WITH_CUDA
  if (g.is_cuda()) {
    detail::dispatch_cuda_elementwise("sum_to_shape", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::sum_to<T>(out.data<T>(), padded.data(), g.data<T>(), g.shape().data(), g.dim(),
                               cuda::current_stream());
    });
    return out;
  }
#endif
  detail::check_cpu("sum_to_shape", g);
  detail::dispatch_float("sum_to_shape", g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::sum_to<T>(out.data<T>(), padded.data(), g.data<T>(), g.shape().data(), g.dim());
  });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", Binary::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", Binary::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", Binary::Mul, a, b); }

Tensor exp(const Tensor& x) { return unary("exp", Unary::Exp, x); }
Tensor neg_exp(const Tensor& x) { return unary("neg_exp", Unary::NegExp, x); }
Tensor silu(const Tensor& x) { return unary("silu", Unary::Silu, x); }
Tensor softplus(const Tensor& x) { return unary("softplus", Unary::Softplus, x); }

Tensor scale(const Tensor& x_in, double factor) {
  detail::check_same_float("scale", {&x_in});
  Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda_elementwise("scale", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::scale<T>(out.data<T>(), x.data<T>(), factor, x.numel(), cuda::current_stream());
    });
  } else
#endif
  {
    detail::check_cpu("scale", x);
    detail::dispatch_float("scale", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::scale<T>(out.data<T>(), x.data<T>(), static_cast<T>(factor), x.numel());
    });
  }
  if (autograd::should_record({&x_in})) {
    autograd::record("scale", {x_in}, {&out}, [factor](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{scale(ctx.grad_outputs[0].detach(), factor)};
    });
  }
  return out;
}

Tensor sum(const Tensor& x_in) {
  detail::check_same_float("sum", {&x_in});
  Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
#ifdef S6_WITH_CUDA
  if (x.is_cuda()) {
    detail::dispatch_cuda_elementwise("sum", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cuda::sum_all<T>(out.data<T>(), x.data<T>(), x.numel(), cuda::current_stream());
    });
  } else
#endif
  {
    detail::check_cpu("sum", x);
    detail::dispatch_float("sum", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      *out.data<T>() = kernels::cpu::sum_all<T>(x.data<T>(), x.numel());
    });
  }
  if (autograd::should_record({&x_in})) {
    autograd::record("sum", {x_in}, {&out}, [shape = x.shape()](const autograd::BackwardContext& ctx) {
      return autograd::TensorList{ctx.grad_outputs[0].detach().expand(shape).contiguous()};
    });
  }
  return out;
}

Tensor mean(const Tensor& x) {
  S6_CHECK(x.numel() > 0, "mean of an empty tensor {}", x.describe());
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

}  // namespace s6
