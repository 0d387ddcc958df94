// AdamW and the gradient sum of squares: the CPU kernel against a hand-computed two-step example
// and a float64 reference written with PyTorch's operations; the CUDA kernels against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/random.h"
#include "kernels/cpu/optim.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/optim.h"
#include "trainer/optimizer.h"
#endif

using namespace s6;

namespace {

// torch.optim.AdamW (_single_tensor_adamw, no amsgrad) in float64, operation by operation.
void torch_adamw_ref(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                     const std::vector<double>& g, const kernels::AdamWParams& hp) {
  const double bc1 = 1 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1 - std::pow(hp.beta2, static_cast<double>(hp.step));
  const double step_size = hp.lr / bc1, bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < p.size(); ++i) {
    const double gi = g[i] * hp.grad_scale;
    p[i] *= 1 - hp.lr * hp.weight_decay;                // param.mul_(1 - lr * wd)
    m[i] += (gi - m[i]) * (1 - hp.beta1);               // exp_avg.lerp_(grad, 1 - beta1)
    v[i] = v[i] * hp.beta2 + (1 - hp.beta2) * gi * gi;  // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
    const double denom = std::sqrt(v[i]) / bc2_sqrt + hp.eps;
    p[i] += -step_size * m[i] / denom;  // param.addcdiv_(m, denom, -step_size)
  }
}

double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1e-2, std::abs(b[i])));
  return worst;
}

}  // namespace

TEST_CASE("optim: CPU AdamW matches a hand-computed two-step example") {
  // p = 1, lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01, gradients 0.5 then -0.25.
  // Step 1: p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002; m = 0.05; v = 0.00025.
  // Step 2: p = 0.899000002 * 0.999 - 0.1 * (0.02 / 0.19) / (sqrt(0.00031225 / 0.001999) + 1e-8)
  //           = 0.8714672987; m = 0.02; v = 0.00031225.
  float p = 1.f, m = 0.f, v = 0.f;
  kernels::AdamWParams hp;
  hp.lr = 0.1;
  hp.weight_decay = 0.01;
  const float g1 = 0.5f, g2 = -0.25f;
  hp.step = 1;
  kernels::cpu::adamw(&p, &m, &v, &g1, 1, hp);
  CHECK(p == doctest::Approx(0.899000002).epsilon(1e-6));
  CHECK(m == doctest::Approx(0.05).epsilon(1e-6));
  CHECK(v == doctest::Approx(0.00025).epsilon(1e-6));
  hp.step = 2;
  kernels::cpu::adamw(&p, &m, &v, &g2, 1, hp);
  CHECK(p == doctest::Approx(0.8714672987058463).epsilon(1e-6));
  CHECK(m == doctest::Approx(0.02).epsilon(1e-6));
  CHECK(v == doctest::Approx(0.00031225).epsilon(1e-6));
}

TEST_CASE("optim: CPU AdamW follows the PyTorch formula over several steps in float64") {
  Philox rng(7);
  const int64_t n = 1001;
  std::vector<float> p = uniform({n}, -1, 1, rng).to_vector<float>(), m(n, 0.f), v(n, 0.f);
  std::vector<double> pr(p.begin(), p.end()), mr(n, 0.0), vr(n, 0.0);
  kernels::AdamWParams hp;
  hp.lr = 3e-3;
  hp.beta1 = 0.85;
  hp.beta2 = 0.98;
  hp.eps = 1e-6;
  hp.weight_decay = 0.1;
  for (int64_t step = 1; step <= 6; ++step) {
    std::vector<float> g = uniform({n}, -2, 2, rng).to_vector<float>();
    hp.step = step;
    hp.grad_scale = step == 3 ? 0.5 : 1.0;
    kernels::cpu::adamw(p.data(), m.data(), v.data(), g.data(), n, hp);
    torch_adamw_ref(pr, mr, vr, std::vector<double>(g.begin(), g.end()), hp);
  }
  CHECK(max_rel(p, pr) < 1e-5);
  CHECK(max_rel(m, mr) < 1e-5);
  CHECK(max_rel(v, vr) < 1e-5);
}

TEST_CASE("optim: CPU sum of squares") {
  Philox rng(8);
  std::vector<float> x = uniform({10007}, -3, 3, rng).to_vector<float>();
  double ref = 0;
  for (float f : x) ref += static_cast<double>(f) * f;
  CHECK(kernels::cpu::sum_of_squares(x.data(), static_cast<int64_t>(x.size())) ==
        doctest::Approx(ref).epsilon(1e-12));
  CHECK(kernels::cpu::sum_of_squares(x.data(), 0) == 0.0);
}

#ifdef S6_WITH_CUDA
TEST_CASE("optim: the AdamW class on CUDA (multi-tensor launches) matches it on the CPU") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  Philox rng(10);
  // Sizes around the multi-tensor chunk; one parameter never gets a gradient.
  const int64_t chunk = kernels::cuda::kMultiTensorChunk;
  const std::vector<int64_t> sizes = {1, 1000, 8 * chunk + 1, chunk, 3, chunk - 1};
  std::vector<NamedParameter> host, dev;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = uniform({sizes[i]}, -1, 1, rng);
    host.push_back({"p" + std::to_string(i), p.clone().requires_grad_(), i % 2 == 0});
    dev.push_back({"p" + std::to_string(i), p.to(Device::CUDA).requires_grad_(), i % 2 == 0});
  }
  trainer::OptimConfig config;
  config.lr = 1e-2;
  config.weight_decay = 0.05;
  trainer::AdamW on_host(host, config), on_device(dev, config);
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {  // the last parameter gets no gradient
      Tensor g = uniform({sizes[i]}, -1, 1, rng);
      host[i].tensor.set_grad(g);
      dev[i].tensor.set_grad(g.to(Device::CUDA));
    }
    trainer::GradientNorm a = on_host.gradient_norm(), b = on_device.gradient_norm();
    CHECK(b.norm == doctest::Approx(a.norm).epsilon(1e-5));
    CHECK(on_device.gradient_norm().norm == b.norm);  // deterministic
    const double scale = step == 2 ? 0.25 : 1.0;
    on_host.step(1e-2, scale);
    on_device.step(1e-2, scale);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    CAPTURE(i);
    for (auto [x, y] :
         {std::pair{host[i].tensor, dev[i].tensor}, std::pair{on_host.exp_avg()[i], on_device.exp_avg()[i]},
          std::pair{on_host.exp_avg_sq()[i], on_device.exp_avg_sq()[i]}}) {
      std::vector<float> u = x.detach().to_vector<float>(), w = y.detach().to(Device::CPU).to_vector<float>();
      double worst = 0;
      for (size_t k = 0; k < u.size(); ++k)
        worst = std::max(worst, static_cast<double>(std::abs(u[k] - w[k])) / std::max(1e-3f, std::abs(u[k])));
      CHECK(worst < 1e-6);
    }
  }
}
#endif
