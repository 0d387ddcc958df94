// The tape: gradients add for a tensor used twice, leaves accumulate across backward calls,
// no-grad records nothing, saved tensors are released, leaf-ready callbacks, errors are clear.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "autograd/tape.h"
#include "core/random.h"
#include "layers/ops.h"

using namespace s6;

TEST_CASE("autograd: a tensor used twice receives the sum of both gradients") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = mul(x, x);  // d/dx sum(x*x) = 2x, through both operands
  autograd::backward(sum(y));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 4, 6});
  Tensor z = add(scale(x, 3.0), x);  // two uses through different ops
  autograd::backward(sum(z));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{6, 8, 10});  // accumulated (+=)
}

TEST_CASE("autograd: one op output feeding two consumers, with shared gradient buffers") {
  Tensor x = Tensor::from_vector<double>({0.5, -1, 2, 1}, {1, 4}).requires_grad_();
  Tensor w = Tensor::from_vector<double>({1, 1, 1, 1}, {4}).requires_grad_();
  auto [y, s] = rmsnorm_add(x, Tensor(), w, 1e-5);  // returns one ds for x and residual
  Tensor loss = add(sum(y), sum(mul(s, s)));
  autograd::backward(loss);
  Tensor gx = x.grad();
  REQUIRE(gx.defined());
  // Residual branch alone contributes 2*s = 2*x; check it is included exactly once.
  Tensor x2 = Tensor::from_vector<double>({0.5, -1, 2, 1}, {1, 4}).requires_grad_();
  autograd::backward(sum(rmsnorm_add(x2, Tensor(), w.detach(), 1e-5).first));
  std::vector<double> a = gx.to_vector<double>(), b = x2.grad().to_vector<double>();
  std::vector<double> xv = {0.5, -1, 2, 1};
  for (int i = 0; i < 4; ++i) CHECK(a[i] == doctest::Approx(b[i] + 2 * xv[i]));
}

TEST_CASE("autograd: no-grad records nothing and leaves do not require grad through it") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  autograd::clear_tape();
  {
    autograd::NoGradGuard guard;
    Tensor y = mul(x, x);
    CHECK(autograd::tape_size() == 0);
    CHECK_FALSE(y.requires_grad());
  }
  Tensor y = mul(x, x);
  CHECK(autograd::tape_size() == 1);
  CHECK(y.requires_grad());
  autograd::clear_tape();
  CHECK_FALSE(y.requires_grad());  // its tape is gone: y is now a constant
  Tensor c = Tensor::from_vector<double>({1, 2}, {2});
  mul(c, c);
  CHECK(autograd::tape_size() == 0);  // constants record nothing
}

TEST_CASE("autograd: saved tensors are released once their node has run") {
  Philox rng(1);
  Tensor w = uniform({4, 3}, -1, 1, rng, DType::Float64).requires_grad_();
  std::weak_ptr<Storage> saved_input;
  {
    Tensor x = uniform({2, 3}, -1, 1, rng, DType::Float64);
    saved_input = x.storage();
    Tensor loss = sum(linear(x, w));
    x = Tensor();  // only the tape holds x now
    CHECK_FALSE(saved_input.expired());
    autograd::backward(loss);
  }
  CHECK(saved_input.expired());
  CHECK(autograd::tape_size() == 0);
}

TEST_CASE(
    "autograd: the leaf-ready callback fires once per reached leaf, with its final gradient, in order of last "
    "use") {
  Tensor a = Tensor::from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor b = Tensor::from_vector<double>({4, 5, 6}, {3}).requires_grad_();
  Tensor off_path =
      Tensor::from_vector<double>({7, 8, 9}, {3}).requires_grad_();              // on the tape, not in the loss
  Tensor unused = Tensor::from_vector<double>({1, 1, 1}, {3}).requires_grad_();  // never on the tape
  autograd::clear_tape();
  Tensor y = mul(a, a);                      // node 0: a's first use, so its last in the reverse walk
  Tensor dead = mul(off_path, off_path);     // node 1: its output never reaches the loss
  Tensor z = mul(y, b);                      // node 2: b's only use
  Tensor loss = sum(add(z, scale(a, 2.0)));  // nodes 3-5: a again, after its final use in reverse order
  (void)dead;
  std::vector<std::pair<std::string, std::vector<double>>> fired;  // name, .grad when it fired
  auto name_of = [&](const AutogradMeta& m) -> std::string {
    if (&m == a.autograd_meta().get()) return "a";
    if (&m == b.autograd_meta().get()) return "b";
    if (&m == off_path.autograd_meta().get()) return "off_path";
    if (&m == unused.autograd_meta().get()) return "unused";
    return "?";
  };
  autograd::backward(loss, Tensor(), [&](const AutogradMeta& m) {
    REQUIRE(m.grad.get() != nullptr);
    fired.emplace_back(name_of(m), m.grad->to_vector<double>());
  });
  // d/da sum(a*a*b + 2a) = 2ab + 2 (from node 0 and the scale node), d/db = a*a.
  const std::vector<double> ga{10, 22, 38}, gb{1, 4, 9};
  CHECK(a.grad().to_vector<double>() == ga);
  CHECK(b.grad().to_vector<double>() == gb);
  REQUIRE(fired.size() == 2);    // nothing for off_path (no gradient reached it) or unused
  CHECK(fired[0].first == "b");  // b is final after node 2, a only after node 0
  CHECK(fired[0].second == gb);
  CHECK(fired[1].first == "a");
  CHECK(fired[1].second == ga);  // already the sum of both uses when it fired
  CHECK_FALSE(off_path.grad().defined());
  CHECK_FALSE(unused.grad().defined());

  // Accumulating into an existing .grad: the callback sees the accumulated value.
  fired.clear();
  autograd::backward(sum(mul(a, b)), Tensor(), [&](const AutogradMeta& m) {
    fired.emplace_back(name_of(m), m.grad->to_vector<double>());
  });
  REQUIRE(fired.size() == 2);
  CHECK(fired[0].first == "a");  // one node: inputs in order
  CHECK(fired[0].second == std::vector<double>{14, 27, 44});
  CHECK(fired[1].first == "b");
  CHECK(fired[1].second == std::vector<double>{2, 6, 12});

  // A root that is itself a leaf fires once; backward without a callback fires nothing (and works).
  Tensor s = Tensor::from_vector<double>({3}, {1}).requires_grad_();
  int count = 0;
  autograd::backward(s, Tensor(), [&](const AutogradMeta& m) { count += &m == s.autograd_meta().get(); });
  CHECK(count == 1);
  autograd::backward(sum(mul(unused, unused)));
  CHECK(unused.grad().to_vector<double>() == std::vector<double>{2, 2, 2});
}

TEST_CASE("autograd: clear messages for misuse") {
  Tensor c = Tensor::from_vector<double>({1, 2}, {2});
  CHECK_THROWS_WITH_AS(autograd::backward(sum(c)), doctest::Contains("does not require grad"), Error);
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  CHECK_THROWS_WITH_AS(autograd::backward(mul(x, x)), doctest::Contains("is not a scalar"), Error);
  autograd::clear_tape();
  Tensor w = Tensor::zeros({4, 3}, DType::Float64);
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({2, 5}, DType::Float64), w),
                       doctest::Contains("linear: input float64[2, 5] cpu has 5 features but weight "
                                         "float64[4, 3] cpu expects 3"),
                       Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({2, 3}, DType::Float32), w),
                       doctest::Contains("linear: inputs disagree"), Error);
  Tensor u = Tensor::zeros({1, 4, 3}, DType::Float64);
  Tensor A = Tensor::zeros({3, 2}, DType::Float64), B = Tensor::zeros({1, 4, 5}, DType::Float64);
  CHECK_THROWS_WITH_AS(selective_scan(u, u, A, B, B, Tensor(), Tensor(), Tensor()),
                       doctest::Contains("selective_scan: B should be [1, 4, 2] but is float64[1, 4, 5]"),
                       Error);
  Tensor ids = Tensor::from_vector<int64_t>({0, 9}, {2});
  CHECK_THROWS_WITH_AS(embedding(ids, Tensor::zeros({4, 3}, DType::Float64)),
                       doctest::Contains("token id 9 at position 1 is outside [0, 4)"), Error);
}
