// bf16 mixed precision: the CPU's bf16 path of every fused op against float64 on the same rounded
// inputs (values, gradients and the dtype contract), the bf16 model against the fp32 model, its
// recurrent step, and (on a GPU) the CUDA bf16 model against the CPU bf16 model.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/random.h"
#include "layers/mamba.h"
#include "layers/ops.h"
#include "tests/compare.h"

using namespace s6;

namespace {

using testing::rel_err;

Tensor rounded(const Tensor& t) { return t.to(DType::BFloat16).to(DType::Float32); }

struct Input {
  Tensor value;      // float32 values (already bf16-representable where `bf16` is set)
  bool bf16;         // passed as bfloat16 (else float32)
  bool diff = true;  // requires grad
};

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// Runs f in float64 (the reference) and with the bf16 inputs as bfloat16 CPU tensors; compares
// every output (and its dtype: `out_dtypes`) and, after backpropagating the same bf16-rounded
// cotangents, every gradient (whose dtype must be its input's).
void compare_with_float64(const std::string& name, const OpFn& f, const std::vector<Input>& inputs,
                          const std::vector<DType>& out_dtypes, double tol, Philox& rng) {
  CAPTURE(name);
  std::vector<Tensor> ref_in, mixed_in;
  for (const Input& in : inputs) {
    if (!in.value.defined()) {
      ref_in.emplace_back();
      mixed_in.emplace_back();
      continue;
    }
    const bool floating = is_floating(in.value.dtype());
    Tensor r = floating ? in.value.to(DType::Float64) : in.value;
    Tensor m = in.bf16 ? in.value.to(DType::BFloat16) : in.value.clone();
    if (floating && in.diff) {
      r.requires_grad_();
      m.requires_grad_();
    }
    ref_in.push_back(r);
    mixed_in.push_back(m);
  }
  auto backward_all = [](const std::vector<Tensor>& outs, const std::vector<Tensor>& cots) {
    Tensor total;
    for (size_t k = 0; k < outs.size(); ++k) {
      Tensor term = sum(mul(to_dtype(outs[k], cots[k].dtype()), cots[k]));
      total = total.defined() ? add(total, term) : term;
    }
    autograd::backward(total);
  };
  std::vector<Tensor> ref = f(ref_in);
  std::vector<Tensor> cots;
  for (const Tensor& r : ref) cots.push_back(rounded(uniform(r.shape(), -1, 1, rng, DType::Float32)));
  std::vector<Tensor> ref_cots;
  for (const Tensor& c : cots) ref_cots.push_back(c.to(DType::Float64));
  backward_all(ref, ref_cots);

  std::vector<Tensor> out = f(mixed_in);
  REQUIRE(out.size() == ref.size());
  REQUIRE(out_dtypes.size() == out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    CAPTURE(k);
    CHECK(out[k].dtype() == out_dtypes[k]);
    CHECK(out[k].device() == Device::CPU);
    CHECK(rel_err(out[k], ref[k]) < tol);
  }
  backward_all(out, cots);  // float32 cotangents; each output is cast to them differentiably
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!mixed_in[i].defined() || !mixed_in[i].requires_grad()) continue;
    CAPTURE(i);
    REQUIRE(mixed_in[i].grad().defined());
    CHECK(mixed_in[i].grad().dtype() == mixed_in[i].dtype());
    CHECK(rel_err(mixed_in[i].grad(), ref_in[i].grad()) < tol);
  }
}

Input bf16_input(const Shape& shape, Philox& rng, double lo = -1, double hi = 1) {
  return {rounded(uniform(shape, lo, hi, rng, DType::Float32)), true};
}
Input f32_input(const Shape& shape, Philox& rng, double lo = -1, double hi = 1) {
  return {uniform(shape, lo, hi, rng, DType::Float32), false};
}

MambaConfig small_config() {
  MambaConfig c;
  c.d_model = 16;
  c.n_layer = 2;
  c.vocab_size = 11;
  c.d_state = 4;
  return c;
}

struct LossAndGrads {
  Tensor logits;
  double loss = 0;
  std::vector<Tensor> grads;  // one per parameter, in order
};

// Forward, cross-entropy on every position, backward; the parameters' gradients are taken out
// (and cleared) so that the model can run again.
LossAndGrads loss_and_grads(MambaLM& model, const Tensor& ids, const Tensor& targets) {
  Tensor logits = model.forward(ids.to(model.device()));
  const int64_t vocab = logits.size(2);
  Tensor loss = cross_entropy(reshape(logits, {targets.numel(), vocab}), targets.to(model.device()));
  autograd::backward(loss);
  LossAndGrads r{logits.detach(), loss.item(), {}};
  for (NamedParameter& p : model.parameters()) {
    r.grads.push_back(p.tensor.grad().detach());
    p.tensor.set_grad(Tensor());
  }
  return r;
}

}  // namespace

TEST_CASE(
    "mixed precision (CPU): every fused op takes bf16, computes in fp32, returns bf16 and bf16 gradients") {
  Philox rng(501);
  const double tol = 2e-2;
  const DType bf = DType::BFloat16, f32 = DType::Float32;
  compare_with_float64(
      "linear", [](const auto& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; },
      {bf16_input({3, 5, 7}, rng), bf16_input({6, 7}, rng), bf16_input({6}, rng)}, {bf}, tol, rng);
  compare_with_float64(
      "causal_conv1d",
      [](const auto& in) { return std::vector<Tensor>{causal_conv1d(in[0], in[1], in[2], true, in[3])}; },
      {bf16_input({2, 9, 5}, rng),
       bf16_input({5, 1, 4}, rng),
       bf16_input({5}, rng),
       {rounded(uniform({2, 5, 3}, -1, 1, rng, DType::Float32)), true, false}},
      {bf}, tol, rng);
  compare_with_float64(
      "rmsnorm_add",
      [](const auto& in) {
        auto [y, s] = rmsnorm_add(in[0], in[1], in[2], 1e-5);
        return std::vector<Tensor>{y, s};
      },
      {bf16_input({4, 3, 12}, rng), bf16_input({4, 3, 12}, rng), bf16_input({12}, rng, 0.5, 1.5)}, {bf, bf},
      tol, rng);
  // Mixed: bf16 mixer output over a float32 residual stream and weight -> bf16 y, float32 s.
  compare_with_float64(
      "rmsnorm_add (bf16 x, float32 residual stream)",
      [](const auto& in) {
        auto [y, s] = rmsnorm_add(in[0], in[1], in[2], 1e-5);
        return std::vector<Tensor>{y, s};
      },
      {bf16_input({4, 3, 12}, rng), f32_input({4, 3, 12}, rng), f32_input({12}, rng, 0.5, 1.5)}, {bf, f32}, tol,
      rng);
  CHECK_THROWS_WITH_AS(
      rmsnorm_add(Tensor::zeros({2, 4}, bf), Tensor::zeros({2, 4}, bf), Tensor::zeros({4}), 1e-5),
      doctest::Contains("inputs disagree"), Error);
  Tensor ids = randint({3, 4}, 0, 9, rng, DType::Int64);
  compare_with_float64(
      "embedding", [](const auto& in) { return std::vector<Tensor>{embedding(in[0], in[1])}; },
      {{ids, false, false}, bf16_input({9, 6}, rng)}, {bf}, tol, rng);
  Tensor targets = randint({10}, 0, 13, rng, DType::Int64);
  compare_with_float64(
      "cross_entropy", [](const auto& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1])}; },
      {bf16_input({10, 13}, rng, -3, 3), {targets, false, false}}, {f32}, tol, rng);
  // The scan's contract (the CUDA kernel's): u, delta, B, C, z bf16; A, D, delta_bias float32;
  // the final state float32.
  compare_with_float64(
      "selective_scan",
      [](const auto& in) {
        ScanOptions o;
        o.return_final_state = true;
        ScanResult r = selective_scan_ex(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], o);
        return std::vector<Tensor>{r.out, r.final_state};
      },
      {bf16_input({2, 11, 6}, rng), bf16_input({2, 11, 6}, rng, -2, 0.5), f32_input({6, 4}, rng, -2, -0.2),
       bf16_input({2, 11, 4}, rng), bf16_input({2, 11, 4}, rng), f32_input({6}, rng),
       bf16_input({2, 11, 6}, rng), f32_input({6}, rng, -1, 0)},
      {bf, f32}, tol, rng);
}

TEST_CASE("mixed precision (CPU): the scan refuses bf16 A, D or delta_bias, naming the tensor") {
  Tensor u = Tensor::zeros({1, 4, 2}, DType::BFloat16), B = Tensor::zeros({1, 4, 3}, DType::BFloat16);
  Tensor A32 = Tensor::zeros({2, 3}, DType::Float32);
  CHECK_THROWS_WITH_AS(selective_scan(u, u, A32.to(DType::BFloat16), B, B, Tensor(), Tensor(), Tensor()),
                       doctest::Contains("A must be a float32 CPU tensor"), Error);
  CHECK_THROWS_WITH_AS(selective_scan(u, u, A32, B, B, Tensor::zeros({2}, DType::BFloat16), Tensor(), Tensor()),
                       doctest::Contains("D must be a float32 CPU tensor"), Error);
  CHECK_THROWS_WITH_AS(selective_scan(u, u.to(DType::Float32), A32, B, B, Tensor(), Tensor(), Tensor()),
                       doctest::Contains("delta must be a CPU bfloat16 tensor like u"), Error);
}

TEST_CASE("mixed precision (CPU): the bf16 model's loss and gradients track the fp32 model's") {
  MambaConfig c = small_config();
  SUBCASE("S6, Mamba block") {}
  SUBCASE("S4 (LTI) layer") { c.layer = LayerKind::S4; }
  SUBCASE("no-gate block") { c.block = BlockKind::NoGate; }
  MambaLM fp32(c, 21), mixed(c, 21, DType::Float32, Device::CPU, DType::BFloat16);
  CHECK(mixed.compute_dtype() == DType::BFloat16);
  Philox rng(9);
  Tensor ids = randint({3, 17}, 0, c.vocab_size, rng, DType::Int32);
  Tensor targets = randint({3 * 17}, 0, c.vocab_size, rng, DType::Int64);
  LossAndGrads a = loss_and_grads(fp32, ids, targets), b = loss_and_grads(mixed, ids, targets);
  CHECK(b.logits.dtype() == DType::BFloat16);
  CHECK(rel_err(b.logits, a.logits) < 2e-2);
  MESSAGE("loss fp32 ", a.loss, ", bf16 mixed ", b.loss);
  CHECK(std::fabs(b.loss - a.loss) < 1e-2 * std::fabs(a.loss));
  double worst = 0;
  for (size_t i = 0; i < a.grads.size(); ++i) {
    CAPTURE(mixed.parameters()[i].name);
    CHECK(b.grads[i].dtype() == DType::Float32);  // parameters and their gradients stay fp32
    const double e = rel_err(b.grads[i], a.grads[i]);
    worst = std::max(worst, e);
    CHECK(e < 5e-2);
  }
  MESSAGE("largest relative gradient error, bf16 mixed vs fp32: ", worst);
  CHECK_THROWS_WITH_AS(MambaLM(c, 1, DType::Float64, Device::CPU, DType::BFloat16),
                       doctest::Contains("mixed precision is bfloat16 over float32"), Error);
}

TEST_CASE("mixed precision (CPU): step() and prefill continue the bf16 forward") {
  MambaConfig c = small_config();
  MambaLM model(c, 5, DType::Float32, Device::CPU, DType::BFloat16);
  autograd::NoGradGuard no_grad;
  Philox rng(12);
  const int64_t batch = 2, length = 7;
  Tensor ids = randint({batch, length}, 0, c.vocab_size, rng, DType::Int32);
  Tensor full = model.forward(ids);
  InferenceState state = model.new_state(batch);
  CHECK(state.layers[0].conv_state.dtype() == DType::BFloat16);
  CHECK(state.layers[0].ssm_state.dtype() == DType::Float32);
  for (int64_t t = 0; t < length; ++t) {
    CAPTURE(t);
    Tensor logits = model.step(ids.narrow(1, t, 1).contiguous().view({batch}), state);
    CHECK(logits.dtype() == DType::BFloat16);
    CHECK(rel_err(logits, full.narrow(1, t, 1).contiguous().view({batch, -1})) < 2e-2);
  }
}

TEST_CASE("mixed precision (cuda): the CUDA bf16 model matches the CPU bf16 model") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  MambaConfig c = small_config();
  c.d_model = 48;  // d_inner 96: several warps per row
  for (int64_t length : {1, 37, 300}) {
    CAPTURE(length);
    MambaLM exact(c, 33), cpu(c, 33, DType::Float32, Device::CPU, DType::BFloat16);
    MambaLM gpu(c, 33, DType::Float32, Device::CUDA, DType::BFloat16);
    Philox rng(static_cast<uint64_t>(40 + length));
    Tensor ids = randint({2, length}, 0, c.vocab_size, rng, DType::Int32);
    Tensor targets = randint({2 * length}, 0, c.vocab_size, rng, DType::Int64);
    LossAndGrads truth = loss_and_grads(exact, ids, targets), a = loss_and_grads(cpu, ids, targets),
                 b = loss_and_grads(gpu, ids, targets);
    CHECK(b.logits.dtype() == DType::BFloat16);
    CHECK(b.logits.device() == Device::CUDA);
    CHECK(rel_err(b.logits, a.logits) < 2e-2);
    CHECK(std::fabs(b.loss - a.loss) < 1e-2 * std::fabs(a.loss));
    // Two bf16 computations round differently, so each gradient is held to the CPU bf16 oracle's
    // own distance from the fp32 model (up to 3% here for dt_proj at length 1), not to each other.
    for (size_t i = 0; i < a.grads.size(); ++i) {
      CAPTURE(gpu.parameters()[i].name);
      CHECK(b.grads[i].dtype() == DType::Float32);
      const double oracle = rel_err(a.grads[i], truth.grads[i]);
      CAPTURE(oracle);
      CHECK(rel_err(b.grads[i], truth.grads[i]) < 2 * oracle + 1e-2);
    }
  }
}

TEST_CASE("mixed precision (cuda): the mixed rmsnorm_add is bitwise the casts around the fp32 norm") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  Philox rng(601);
  for (int64_t width : {12, 768, 1500}) {  // warp-per-row widths and a block-per-row width
    for (bool with_residual : {true, false}) {
      CAPTURE(width);
      CAPTURE(with_residual);
      const Shape shape{3, 37, width};
      Tensor x0 = rounded(uniform(shape, -2, 2, rng, DType::Float32));
      Tensor r0 = uniform(shape, -2, 2, rng, DType::Float32),
             w0 = uniform({width}, 0.5, 1.5, rng, DType::Float32);
      Tensor gy = rounded(uniform(shape, -1, 1, rng, DType::Float32)),
             gs = uniform(shape, -1, 1, rng, DType::Float32);
      struct Run {
        Tensor y, s, dx, dr, dw;
      };
      auto run = [&](bool fused, Device device) {
        Tensor x = x0.to(DType::BFloat16).to(device).requires_grad_();
        Tensor r = with_residual ? r0.to(device).requires_grad_() : Tensor();
        Tensor w = w0.to(device).requires_grad_();
        Tensor y, s;
        if (fused) {
          std::tie(y, s) = rmsnorm_add(x, r, w, 1e-5);
        } else {  // the pre-fusion model: cast up, fp32 norm, cast the output down
          std::tie(y, s) = rmsnorm_add(to_dtype(x, DType::Float32), r, w, 1e-5);
          y = to_dtype(y, DType::BFloat16);
        }
        Tensor loss = add(sum(mul(to_dtype(y, DType::Float32), gy.to(device))), sum(mul(s, gs.to(device))));
        autograd::backward(loss);
        return Run{y.detach(), s.detach(), x.grad(), with_residual ? r.grad() : Tensor(), w.grad()};
      };
      Run fused = run(true, Device::CUDA), composed = run(false, Device::CUDA), cpu = run(true, Device::CPU);
      CHECK(fused.y.dtype() == DType::BFloat16);
      CHECK(fused.s.dtype() == DType::Float32);
      CHECK(fused.dx.dtype() == DType::BFloat16);
      CHECK(fused.dw.dtype() == DType::Float32);
      auto same = [](const Tensor& a, const Tensor& b) {
        return a.to(Device::CPU).to(DType::Float64).to_vector<double>() ==
               b.to(Device::CPU).to(DType::Float64).to_vector<double>();
      };
      CHECK(same(fused.y, composed.y));
      CHECK(same(fused.s, composed.s));
      CHECK(same(fused.dx, composed.dx));
      CHECK(same(fused.dw, composed.dw));
      CHECK(rel_err(fused.y, cpu.y) < 1e-2);
      CHECK(rel_err(fused.s, cpu.s) < 1e-6);
      CHECK(rel_err(fused.dx, cpu.dx) < 1e-2);
      CHECK(rel_err(fused.dw, cpu.dw) < 1e-4);
      if (with_residual) {
        CHECK(fused.dr.dtype() == DType::Float32);
        CHECK(same(fused.dr, composed.dr));
        CHECK(rel_err(fused.dr, cpu.dr) < 1e-4);
      }
    }
  }
}
