// The Mamba model: parameter names/counts, reference init, float64 gradient checks of a block and
// of a 2-layer LM loss, and recurrent step()/prefill against the sequence forward.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/tape.h"
#include "core/random.h"
#include "layers/mamba.h"
#include "layers/mamba_init.h"
#include "layers/ops.h"
#include "tests/gradcheck.h"

using namespace s6;

namespace {

// docs/model.md 1.2's per-layer formula, written out independently of parameter_specs().
int64_t spec_count(int64_t dm, int64_t n_layer, int64_t vocab, bool tied = true) {
  int64_t din = 2 * dm, n = 16, w = 4, r = (dm + 15) / 16, vpad = (vocab + 7) / 8 * 8;
  int64_t layer = 2 * din * dm + din * w + din + din * (r + 2 * n) + r * din + din + din * n + din + din * dm +
                  dm;
  return n_layer * layer + vpad * dm + dm + (tied ? 0 : vpad * dm);
}

MambaConfig tiny_config() {
  MambaConfig c;
  c.d_model = 4;
  c.n_layer = 2;
  c.vocab_size = 5;
  c.d_state = 3;
  c.d_conv = 3;
  return c;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

Tensor column(const Tensor& ids, int64_t start, int64_t length) {
  return ids.narrow(1, start, length).contiguous();
}

}  // namespace

TEST_CASE("model: parameter counts match docs/model.md 1.2") {
  MambaConfig c;
  c.d_model = 768;
  c.n_layer = 24;
  c.vocab_size = 50277;
  CHECK(count_parameters(c) == spec_count(768, 24, 50277));
  CHECK(std::lround(count_parameters(c) / 1e5) == 1291);  // 129.1M
  c.d_model = 1024;
  c.n_layer = 48;
  CHECK(std::lround(count_parameters(c) / 1e5) == 3715);  // 371.5M
  c.d_model = 2560;
  c.n_layer = 64;
  CHECK(std::lround(count_parameters(c) / 1e6) == 2768);  // 2768M
  MambaConfig synth;  // 2 layers, d_model 64, vocab 16: the synthetic-task model
  CHECK(count_parameters(synth) == spec_count(64, 2, 16));
  CHECK(std::lround(count_parameters(synth) / 100.0) == 665);  // ~66.5K tied
  synth.tie_embeddings = false;
  CHECK(count_parameters(synth) == spec_count(64, 2, 16, false));
  MambaLM model(MambaConfig{}, 1);
  CHECK(model.num_parameters() == count_parameters(MambaConfig{}));
}

TEST_CASE("model: reference parameter names, shapes and weight-decay flags") {
  MambaLM model(MambaConfig{}, 1);
  CHECK(model.parameter("backbone.layers.1.mixer.conv1d.weight").shape() == Shape{128, 1, 4});
  CHECK(model.parameter("backbone.layers.0.mixer.in_proj.weight").shape() == Shape{256, 64});
  CHECK(model.parameter("backbone.layers.0.mixer.x_proj.weight").shape() == Shape{4 + 32, 128});
  CHECK(model.parameter("backbone.layers.0.mixer.dt_proj.weight").shape() == Shape{128, 4});
  CHECK(model.parameter("backbone.embedding.weight").shape() == Shape{16, 64});
  CHECK_THROWS_WITH_AS(model.parameter("lm_head.weight"),
                       doctest::Contains("no parameter named 'lm_head.weight'"), Error);
  for (const NamedParameter& p : model.parameters()) {
    bool decays = p.name.find("proj.weight") != std::string::npos ||
                  p.name.find("conv1d.weight") != std::string::npos;
    CAPTURE(p.name);
    CHECK(p.weight_decay == decays);
  }
}

TEST_CASE("model: initialization statistics follow the reference") {
  MambaConfig c;
  c.n_layer = 4;
  MambaLM model(c, 7, DType::Float64);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    std::string p = "backbone.layers." + std::to_string(i) + ".mixer.";
    for (double b : model.parameter(p + "dt_proj.bias").to_vector<double>()) {
      double dt = std::log1p(std::exp(b));
      CHECK((dt >= 1e-4 && dt <= 0.1 + 1e-12));
    }
    std::vector<double> a_log = model.parameter(p + "A_log").to_vector<double>();
    for (int64_t d = 0; d < c.d_inner(); ++d)
      for (int64_t n = 0; n < c.d_state; ++n)
        CHECK(a_log[d * c.d_state + n] == doctest::Approx(std::log(n + 1.0)));
    for (double v : model.parameter(p + "D").to_vector<double>()) CHECK(v == 1.0);
    double bound = 1.0 / std::sqrt(static_cast<double>(c.d_inner())) / std::sqrt(4.0);
    std::vector<double> w = model.parameter(p + "out_proj.weight").to_vector<double>();
    double mx = 0, ss = 0;
    for (double v : w) {
      mx = std::max(mx, std::fabs(v));
      ss += v * v;
    }
    CHECK(mx <= bound);
    CHECK(std::sqrt(ss / w.size()) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.05));
    for (double v : model.parameter(p + "conv1d.weight").to_vector<double>()) CHECK(std::fabs(v) <= 0.5);
  }
  std::vector<double> e = model.parameter("backbone.embedding.weight").to_vector<double>();
  double ss = 0;
  for (double v : e) ss += v * v;
  CHECK(std::sqrt(ss / e.size()) == doctest::Approx(0.02).epsilon(0.1));
  CHECK(inverse_softplus(0.01) == doctest::Approx(std::log(std::expm1(0.01))));
}

TEST_CASE("model: float64 gradient check of one MambaBlock (every parameter and the input)") {
  MambaConfig c = tiny_config();
  c.n_layer = 1;
  MambaLM model(c, 3, DType::Float64);
  std::map<std::string, Tensor> mixer_params;
  std::vector<Tensor> inputs;
  Philox rng(11);
  inputs.push_back(uniform({2, 5, c.d_model}, -1, 1, rng, DType::Float64).requires_grad_());
  inputs.push_back(uniform({2, 5, c.d_model}, -1, 1, rng, DType::Float64).requires_grad_());  // residual
  for (const NamedParameter& p : model.parameters()) {
    std::string prefix = "backbone.layers.0.mixer.";
    if (p.name.rfind(prefix, 0) == 0) mixer_params[p.name.substr(prefix.size())] = p.tensor;
    if (p.name.find("layers.0") != std::string::npos) inputs.push_back(p.tensor);
  }
  MambaBlock block(c, model.parameter("backbone.layers.0.norm.weight"),
                   MambaMixer(c, mixer_params, DType::Float64));
  CHECK(inputs.size() == 2 + 10);
  std::string report = testing::gradcheck(
      [&](const std::vector<Tensor>& in) {
        auto [out, residual] = block.forward(in[0], in[1]);
        return std::vector<Tensor>{out, residual};
      },
      inputs);
  CHECK(report == "");
}

TEST_CASE("model: float64 gradient check of a 2-layer MambaLM loss (S6 and the ablations)") {
  for (int variant = 0; variant < 3; ++variant) {
    MambaConfig c = tiny_config();
    if (variant == 1) c.layer = LayerKind::S4;
    if (variant == 2) {
      c.block = BlockKind::NoGate;
      c.tie_embeddings = false;
    }
    CAPTURE(variant);
    MambaLM model(c, 5, DType::Float64);
    Philox rng(12);
    Tensor emb = uniform({2, 5, c.d_model}, -1, 1, rng, DType::Float64).requires_grad_();
    Tensor targets = randint({10}, 0, c.vocab_size, rng, DType::Int64);
    std::vector<Tensor> inputs{emb};
    for (const NamedParameter& p : model.parameters()) inputs.push_back(p.tensor);
    std::string report = testing::gradcheck(
        [&](const std::vector<Tensor>& in) {
          Tensor logits = model.forward_embeddings(in[0]);
          return std::vector<Tensor>{cross_entropy(reshape(logits, {10, c.padded_vocab()}), targets)};
        },
        inputs);
    CHECK(report == "");
  }
}

TEST_CASE("model: step() over L tokens equals one forward and prefill A then B equals A+B") {
  MambaConfig c;
  c.d_model = 32;
  c.vocab_size = 11;
  MambaLM model(c, 9);
  autograd::NoGradGuard no_grad;
  Philox rng(4);
  const int64_t batch = 3, length = 9;
  Tensor ids = randint({batch, length}, 0, c.vocab_size, rng, DType::Int32);
  Tensor full = model.forward(ids);

  InferenceState stepped = model.new_state(batch);
  for (int64_t t = 0; t < length; ++t) {
    Tensor logits = model.step(column(ids, t, 1).view({batch}), stepped);
    CAPTURE(t);
    CHECK(max_abs_diff(logits, full.narrow(1, t, 1).contiguous().view({batch, -1})) < 1e-5);
  }
  InferenceState whole = model.new_state(batch);
  model.forward(ids, &whole);
  InferenceState split_state = model.new_state(batch);
  model.forward(column(ids, 0, 4), &split_state);
  Tensor second = model.forward(column(ids, 4, length - 4), &split_state);
  CHECK(max_abs_diff(second, full.narrow(1, 4, length - 4)) < 1e-5);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    CHECK(max_abs_diff(stepped.layers[i].ssm_state, whole.layers[i].ssm_state) < 1e-5);
    CHECK(max_abs_diff(stepped.layers[i].conv_state, whole.layers[i].conv_state) < 1e-5);
    CHECK(max_abs_diff(split_state.layers[i].ssm_state, whole.layers[i].ssm_state) < 1e-5);
    CHECK(max_abs_diff(split_state.layers[i].conv_state, whole.layers[i].conv_state) < 1e-5);
  }
}

TEST_CASE("model: two builds with one seed are bit-identical and another seed differs") {
  MambaLM a(MambaConfig{}, 42), b(MambaConfig{}, 42), c(MambaConfig{}, 43);
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    CHECK(a.parameters()[i].tensor.to_vector<float>() == b.parameters()[i].tensor.to_vector<float>());
  }
  CHECK(a.parameter("backbone.embedding.weight").to_vector<float>() !=
        c.parameter("backbone.embedding.weight").to_vector<float>());
}

TEST_CASE("model: a mixer missing a parameter names it instead of running with an empty tensor") {
  MambaConfig c;
  c.d_model = 8;
  c.n_layer = 1;
  MambaLM model(c, 1, DType::Float32);
  std::map<std::string, Tensor> mixer_params;
  const std::string prefix = "backbone.layers.0.mixer.";
  for (const NamedParameter& p : model.parameters())
    if (p.name.rfind(prefix, 0) == 0 && p.name != prefix + "x_proj.weight")
      mixer_params[p.name.substr(prefix.size())] = p.tensor;
  MambaMixer mixer(c, mixer_params, DType::Float32);
  Philox rng(3);
  CHECK_THROWS_WITH_AS(mixer.forward(uniform({1, 4, c.d_model}, -1, 1, rng)),
                       doctest::Contains("no parameter mixer.x_proj.weight"), Error);
}
