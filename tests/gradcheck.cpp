// The gradient checker: analytic gradients from one backward, numeric ones by perturbing each
// element of each differentiable input by +-eps and re-running the op without a tape.
#include "tests/gradcheck.h"

#include <cmath>

#include "autograd/tape.h"
#include "core/random.h"
#include "layers/ops.h"

namespace s6::testing {

namespace {

double weighted_sum(const std::vector<Tensor>& outs, const std::vector<Tensor>& cotangents) {
  double total = 0;
  for (size_t k = 0; k < outs.size(); ++k) {
    std::vector<double> o = outs[k].to_vector<double>(), r = cotangents[k].to_vector<double>();
    for (size_t i = 0; i < o.size(); ++i) total += o[i] * r[i];
  }
  return total;
}

}  // namespace

std::string gradcheck(const OpFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt) {
  Philox rng(opt.seed, 99);
  for (Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.set_grad(Tensor());

  std::vector<Tensor> outs = f(inputs);
  std::vector<Tensor> cotangents;
  for (const Tensor& o : outs) cotangents.push_back(normal(o.shape(), 0, 1, rng, o.dtype()));
  if (outs.size() == 1) {
    autograd::backward(outs[0], cotangents[0]);
  } else {
    Tensor loss;
    for (size_t k = 0; k < outs.size(); ++k) {
      Tensor term = sum(mul(outs[k], cotangents[k]));
      loss = loss.defined() ? add(loss, term) : term;
    }
    autograd::backward(loss);
  }

  std::string report;
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    std::vector<double> a = analytic.defined() ? analytic.to_vector<double>()
                                               : std::vector<double>(x.numel(), 0.0);
    double* p = x.data<double>();  // inputs are contiguous float64 on the CPU
    for (int64_t j = 0; j < x.numel(); ++j) {
      double saved = p[j];
      p[j] = saved + opt.eps;
      double plus = weighted_sum(f(inputs), cotangents);
      p[j] = saved - opt.eps;
      double minus = weighted_sum(f(inputs), cotangents);
      p[j] = saved;
      double numeric = (plus - minus) / (2 * opt.eps);
      if (!(std::fabs(a[j] - numeric) <= opt.atol + opt.rtol * std::fabs(numeric))) {
        report += fmt::format("input {} element {}: analytic {:.9g} vs numeric {:.9g}\n", i, j, a[j], numeric);
        if (report.size() > 2000) return report;
      }
    }
  }
  return report;
}

}  // namespace s6::testing
