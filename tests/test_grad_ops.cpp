// Float64 central-difference gradient checks, one test case per differentiable op.
#include <doctest/doctest.h>

#include "core/random.h"
#include "layers/ops.h"
#include "tests/gradcheck.h"

using namespace s6;
using s6::testing::gradcheck;

namespace {

Tensor param(const Shape& shape, Philox& rng, double lo = -1.0, double hi = 1.0) {
  return uniform(shape, lo, hi, rng, DType::Float64).requires_grad_();
}

}  // namespace

TEST_CASE("grad: linear with and without bias") {
  Philox rng(1);
  Tensor x = param({2, 3, 5}, rng), w = param({4, 5}, rng), b = param({4}, rng);
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; }, {x, w, b}) ==
        "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{linear(in[0], in[1])}; }, {x, w}) == "");
}

TEST_CASE("grad: linear_split equals split(linear) and checks against finite differences") {
  Philox rng(11);
  Tensor x = param({2, 3, 5}, rng), w = param({7, 5}, rng), b = param({7}, rng);
  const std::vector<int64_t> sizes{3, 0, 4};
  std::vector<Tensor> parts = linear_split(x, w, b, sizes);
  std::vector<Tensor> want = split(linear(x, w, b), sizes, -1);
  REQUIRE(parts.size() == 3);
  for (size_t i = 0; i < parts.size(); ++i) {
    CHECK(parts[i].is_contiguous());
    CHECK(parts[i].shape() == want[i].shape());
    CHECK(parts[i].to_vector<double>() == want[i].contiguous().to_vector<double>());
  }
  CHECK(gradcheck([&](const auto& in) { return linear_split(in[0], in[1], in[2], sizes); }, {x, w, b}) == "");
  CHECK(gradcheck([](const auto& in) { return linear_split(in[0], in[1], Tensor(), {2, 5}); }, {x, w}) == "");
  // Only the second part reaches the loss: the first part's weight and bias rows get zero gradients.
  CHECK(gradcheck(
            [](const auto& in) {
              return std::vector<Tensor>{linear_split(in[0], in[1], in[2], {2, 5})[1]};
            },
            {x, w, b}) == "");
  CHECK_THROWS_WITH_AS(linear_split(x, w, b, {3, 3}), doctest::Contains("add up to the weight's 7"), Error);
  CHECK_THROWS_WITH_AS(linear_split(x, w, b, {8, -1}), doctest::Contains(">= 0"), Error);
}

TEST_CASE("grad: causal_conv1d with SiLU, bias, initial state, widths 2-4") {
  Philox rng(2);
  for (int64_t width : {2, 3, 4}) {
    for (bool silu : {true, false}) {
      CAPTURE(width);
      CAPTURE(silu);
      Tensor x = param({2, 5, 3}, rng), w = param({3, 1, width}, rng), b = param({3}, rng);
      Tensor init = uniform({2, 3, width - 1}, -1, 1, rng, DType::Float64);
      CHECK(gradcheck(
                [&](const auto& in) {
                  return std::vector<Tensor>{causal_conv1d(in[0], in[1], in[2], silu, init)};
                },
                {x, w, b}) == "");
      CHECK(
          gradcheck(
              [&](const auto& in) { return std::vector<Tensor>{causal_conv1d(in[0], in[1], Tensor(), silu)}; },
              {x, w}) == "");
    }
  }
}

TEST_CASE("grad: selective_scan with every input (u, delta, A, B, C, D, z, delta_bias)") {
  Philox rng(3);
  const int64_t batch = 2, length = 6, dim = 3, dstate = 4;
  Tensor u = param({batch, length, dim}, rng), delta = param({batch, length, dim}, rng, -2, 0.5);
  Tensor A = param({dim, dstate}, rng, -2, -0.2), B = param({batch, length, dstate}, rng);
  Tensor C = param({batch, length, dstate}, rng), D = param({dim}, rng), z = param({batch, length, dim}, rng);
  Tensor bias = param({dim}, rng, -1, 0.5);
  auto scan = [](const auto& in) {
    return std::vector<Tensor>{selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7])};
  };
  CHECK(gradcheck(scan, {u, delta, A, B, C, D, z, bias}) == "");
  SUBCASE("without z, D and bias; no softplus") {
    Tensor dpos = param({batch, length, dim}, rng, 0.05, 0.6);
    CHECK(gradcheck(
              [](const auto& in) {
                return std::vector<Tensor>{
                    selective_scan(in[0], in[1], in[2], in[3], in[4], Tensor(), Tensor(), Tensor(), false)};
              },
              {u, dpos, A, B, C}) == "");
  }
}

TEST_CASE("grad: rmsnorm_add with and without residual, both outputs") {
  Philox rng(4);
  Tensor x = param({2, 3, 6}, rng), r = param({2, 3, 6}, rng), w = param({6}, rng, 0.5, 1.5);
  CHECK(gradcheck(
            [](const auto& in) {
              auto [y, s] = rmsnorm_add(in[0], in[1], in[2], 1e-5);
              return std::vector<Tensor>{y, s};
            },
            {x, r, w}) == "");
  CHECK(gradcheck(
            [](const auto& in) { return std::vector<Tensor>{rmsnorm_add(in[0], Tensor(), in[1], 1e-5).first}; },
            {x, w}) == "");
}

TEST_CASE("grad: embedding (repeated ids accumulate)") {
  Philox rng(5);
  Tensor w = param({7, 4}, rng);
  Tensor ids = Tensor::from_vector<int64_t>({1, 3, 1, 6, 0, 3}, {2, 3});
  CHECK(gradcheck([&](const auto& in) { return std::vector<Tensor>{embedding(ids, in[0])}; }, {w}) == "");
}

TEST_CASE("grad: cross_entropy with ignored positions") {
  Philox rng(6);
  Tensor logits = param({5, 7}, rng, -2, 2);
  Tensor targets = Tensor::from_vector<int32_t>({3, -100, 0, 6, -100}, {5});
  CHECK(gradcheck([&](const auto& in) { return std::vector<Tensor>{cross_entropy(in[0], targets)}; },
                  {logits}) == "");
}

TEST_CASE("grad: elementwise ops with broadcasting") {
  Philox rng(7);
  Tensor a = param({3, 4}, rng), b = param({4}, rng), c = param({3, 1}, rng);
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{add(in[0], in[1])}; }, {a, b}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{sub(in[0], in[1])}; }, {a, c}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{mul(in[0], in[1])}; }, {a, b}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{scale(in[0], -2.5)}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{exp(in[0])}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{neg_exp(in[0])}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{silu(in[0])}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{softplus(in[0])}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{sum(in[0])}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{mean(in[0])}; }, {a}) == "");
}

TEST_CASE("grad: shape ops (reshape, transpose, narrow, split, expand, contiguous)") {
  Philox rng(8);
  Tensor a = param({2, 3, 4}, rng), v = param({3, 1}, rng);
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{reshape(in[0], {6, -1})}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{contiguous(transpose(in[0], 0, 2))}; },
                  {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{narrow(in[0], -1, 1, 2)}; }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return split(in[0], {1, 3}, 2); }, {a}) == "");
  CHECK(gradcheck([](const auto& in) { return std::vector<Tensor>{expand(in[0], {2, 3, 4})}; }, {v}) == "");
}
