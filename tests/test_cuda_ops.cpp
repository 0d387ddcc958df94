// Every CUDA op (except the scan) against the CPU op on fresh random inputs: forward and every
// gradient through the autograd ops, fp32 (rel. error < 1e-4) and bf16 (< 2e-2), awkward sizes,
// outputs poisoned with NaN before use, bit-identical repeats for the deterministic backwards.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/random.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#include "tests/compare.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/causal_conv1d.h"
#endif

using namespace s6;

namespace {

#define SKIP_WITHOUT_CUDA()                             \
  if (!s6::cuda::available()) {                         \
    MESSAGE("SKIPPED: no CUDA device on this machine"); \
    return;                                             \
  }

using testing::host_values;
using testing::rel_err;

bool bit_equal(const Tensor& a, const Tensor& b) {
  std::vector<double> x = host_values(a), y = host_values(b);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (std::memcmp(&x[i], &y[i], sizeof(double)) != 0) return false;
  return true;
}

// With S6_REPORT_ERRORS set, every comparison prints "ERR <op> <dtype> <what> <error>" to stderr.
void report(const std::string& name, DType dt, const std::string& what, double err) {
  static const bool on = std::getenv("S6_REPORT_ERRORS") != nullptr;
  if (on)
    std::fprintf(stderr, "ERR %s %s %s %.3e\n", name.c_str(), std::string(dtype_name(dt)).c_str(), what.c_str(),
                 err);
}

double tol_for(DType dt) { return dt == DType::BFloat16 ? 2e-2 : 1e-4; }

// Leaves NaN-filled blocks of these shapes in the caching allocator (two of each), so the next
// outputs of the same sizes start out poisoned and any element a kernel forgets stays NaN.
void poison(const std::vector<Tensor>& likes, DType dt) {
  std::vector<Tensor> keep;
  for (const Tensor& t : likes) {
    if (!t.defined()) continue;
    for (int k = 0; k < 2; ++k) keep.push_back(Tensor::full(t.shape(), std::nan(""), dt, Device::CUDA));
  }
}

// A random floating input as the CPU reference sees it (already rounded when dt is bf16).
Tensor rand_input(const Shape& shape, Philox& rng, DType dt, double lo = -1, double hi = 1) {
  Tensor t = uniform(shape, lo, hi, rng, DType::Float32);
  return dt == DType::BFloat16 ? t.to(DType::BFloat16).to(DType::Float32) : t;
}

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// Runs f on the CPU (float32) and on CUDA (dtype dt) with the same inputs; compares every output,
// then backpropagates the same random cotangents and compares every gradient. Integer inputs are
// passed through; floating inputs with diff[i] get requires_grad.
void compare_op(const std::string& name, const OpFn& f, const std::vector<Tensor>& base,
                const std::vector<bool>& diff, DType dt, Philox& rng) {
  CAPTURE(name);
  CAPTURE(dtype_name(dt));
  const double tol = tol_for(dt);
  std::vector<Tensor> cpu_in, gpu_in;
  for (size_t i = 0; i < base.size(); ++i) {
    if (!base[i].defined()) {
      cpu_in.emplace_back();
      gpu_in.emplace_back();
      continue;
    }
    bool floating = is_floating(base[i].dtype());
    Tensor c = base[i].clone();
    Tensor g = (floating ? base[i].to(dt) : base[i]).to(Device::CUDA).detach();
    if (floating && diff[i]) {
      c.requires_grad_();
      g.requires_grad_();
    }
    cpu_in.push_back(c);
    gpu_in.push_back(g);
  }
  bool any_diff = false;
  for (size_t i = 0; i < base.size(); ++i) any_diff |= base[i].defined() && diff[i];
  // Cotangents, rounded like the inputs; the loss is sum_k <out_k, cot_k>. Each backward consumes
  // the whole tape, so the CPU pass runs forward and backward before the CUDA forward.
  std::vector<Tensor> cots;
  auto backward_all = [&](const std::vector<Tensor>& outs, bool on_cuda) {
    if (outs.size() == 1) {
      Tensor c = on_cuda ? cots[0].to(dt).to(Device::CUDA) : cots[0];
      autograd::backward(outs[0], c);
      return;
    }
    Tensor total;
    for (size_t k = 0; k < outs.size(); ++k) {
      Tensor c = on_cuda ? cots[k].to(dt).to(Device::CUDA) : cots[k];
      Tensor term = sum(mul(outs[k], c));
      total = total.defined() ? add(total, term) : term;
    }
    autograd::backward(total);
  };
  std::vector<Tensor> ref = f(cpu_in);
  for (const Tensor& r : ref) cots.push_back(rand_input(r.shape(), rng, dt));
  if (any_diff) backward_all(ref, false);
  poison(ref, dt);
  std::vector<Tensor> out = f(gpu_in);
  REQUIRE(out.size() == ref.size());
  for (size_t k = 0; k < out.size(); ++k) {
    CAPTURE(k);
    CHECK(out[k].device() == Device::CUDA);
    CHECK(out[k].shape() == ref[k].shape());
    const double err = rel_err(out[k], ref[k]);
    report(name, dt, "out" + std::to_string(k), err);
    CHECK(err < tol);
  }
  if (!any_diff) return;
  std::vector<Tensor> grad_likes;
  for (size_t i = 0; i < base.size(); ++i)
    if (base[i].defined() && diff[i]) grad_likes.push_back(base[i]);
  poison(grad_likes, dt);
  backward_all(out, true);
  for (size_t i = 0; i < base.size(); ++i) {
    if (!base[i].defined() || !diff[i]) continue;
    CAPTURE(i);
    REQUIRE(gpu_in[i].grad().defined());
    CHECK(gpu_in[i].grad().device() == Device::CUDA);
    const double err = rel_err(gpu_in[i].grad(), cpu_in[i].grad());
    report(name, dt, "grad" + std::to_string(i), err);
    CHECK(err < tol);
  }
}

const DType kDtypes[] = {DType::Float32, DType::BFloat16};

}  // namespace

TEST_CASE("cuda ops: linear vs CPU (fp32 and bf16 / bias on/off / odd sizes / one row)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(101);
  struct Dims {
    Shape x;
    int64_t out;
  };
  const Dims cases[] = {{{2, 3, 5}, 4}, {{1, 1, 7}, 3}, {{3, 17, 33}, 29}, {{64, 96}, 130}, {{1, 1}, 1}};
  for (DType dt : kDtypes) {
    for (const Dims& c : cases) {
      for (bool bias : {true, false}) {
        CAPTURE(shape_str(c.x));
        CAPTURE(bias);
        Tensor x = rand_input(c.x, rng, dt), w = rand_input({c.out, c.x.back()}, rng, dt);
        Tensor b = bias ? rand_input({c.out}, rng, dt) : Tensor();
        compare_op(
            "linear", [](const auto& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; },
            {x, w, b}, {true, true, true}, dt, rng);
      }
    }
  }
}

TEST_CASE("cuda ops: linear_split vs CPU (parts of odd sizes / a part without gradient / bias)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(111);
  for (DType dt : kDtypes) {
    for (bool bias : {true, false}) {
      CAPTURE(bias);
      Tensor x = rand_input({3, 17, 33}, rng, dt), w = rand_input({29, 33}, rng, dt);
      Tensor b = bias ? rand_input({29}, rng, dt) : Tensor();
      compare_op(
          "linear_split",
          [](const auto& in) {
            return linear_split(in[0], in[1], in[2], {13, 1, 15});
          },
          {x, w, b}, {true, true, true}, dt, rng);
      compare_op(
          "linear_split (second part only)",
          [](const auto& in) {
            return std::vector<Tensor>{linear_split(in[0], in[1], in[2], {13, 16})[1]};
          },
          {x, w, b}, {true, true, true}, dt, rng);
    }
  }
}

TEST_CASE("cuda ops: linear reads a column block of a wider input in place (as x_proj's dt part)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(121);
  for (DType dt : kDtypes) {
    for (int64_t start : {0, 3}) {
      CAPTURE(start);
      Tensor x = rand_input({3, 17, 12}, rng, dt), w = rand_input({9, 5}, rng, dt);
      compare_op(
          "linear (column block)",
          [start](const auto& in) { return std::vector<Tensor>{linear(narrow(in[0], -1, start, 5), in[1])}; },
          {x, w}, {true, true}, dt, rng);
    }
  }
}

TEST_CASE("cuda ops: causal_conv1d + SiLU vs CPU (widths 1-4 / bias / initial state / L=1 / chunks)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(102);
  // The chunk of timesteps per thread adapts to the grid: the small shapes run chunks of 8, the
  // last two chunks of 32 and 64.
  const Shape shapes[] = {{1, 1, 5}, {2, 7, 3}, {3, 131, 67}, {1, 64, 129}, {8, 1030, 256}, {8, 2051, 130}};
  for (DType dt : kDtypes) {
    for (const Shape& s : shapes) {
      for (int64_t width : {1, 2, 3, 4}) {
        if (s[1] > 1000 && width != 4) continue;  // long shapes: the model's width only
        for (int variant = 0; variant < 4; ++variant) {
          bool silu = variant & 1, with_bias = variant & 2;
          CAPTURE(shape_str(s));
          CAPTURE(width);
          CAPTURE(silu);
          CAPTURE(with_bias);
          Tensor x = rand_input(s, rng, dt, -2, 2), w = rand_input({s[2], 1, width}, rng, dt);
          Tensor b = with_bias ? rand_input({s[2]}, rng, dt) : Tensor();
          Tensor init = (variant == 3 && width > 1) ? rand_input({s[0], s[2], width - 1}, rng, dt) : Tensor();
          Tensor init_gpu = init.defined() ? init.to(dt).to(Device::CUDA) : Tensor();
          compare_op(
              "causal_conv1d",
              [&](const auto& in) {
                const Tensor& st = in[0].is_cuda() ? init_gpu : init;
                return std::vector<Tensor>{causal_conv1d(in[0], in[1], in[2], silu, st)};
              },
              {x, w, b}, {true, true, true}, dt, rng);
        }
      }
    }
  }
}

TEST_CASE("cuda ops: causal_conv1d backward is bit-identical across runs") {
  SKIP_WITHOUT_CUDA();
  Philox rng(103);
  Tensor x = uniform({4, 300, 96}, -1, 1, rng, DType::Float32, Device::CUDA);
  Tensor w = uniform({96, 4}, -1, 1, rng, DType::Float32, Device::CUDA);
  Tensor b = uniform({96}, -1, 1, rng, DType::Float32, Device::CUDA);
  Tensor cot = uniform({4, 300, 96}, -1, 1, rng, DType::Float32, Device::CUDA);
  std::vector<Tensor> grads[2];
  for (int run = 0; run < 2; ++run) {
    Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_(), br = b.clone().requires_grad_();
    autograd::backward(causal_conv1d(xr, wr, br, true), cot);
    grads[run] = {xr.grad(), wr.grad(), br.grad()};
  }
  for (int k = 0; k < 3; ++k) CHECK(bit_equal(grads[0][k], grads[1][k]));
}

#ifdef S6_WITH_CUDA
TEST_CASE("cuda ops: causal_conv1d_update steps == causal_conv1d over the sequence") {
  SKIP_WITHOUT_CUDA();
  Philox rng(104);
  const int64_t batch = 3, length = 9, dim = 37;
  for (int64_t width : {2, 3, 4}) {
    for (bool silu : {true, false}) {
      CAPTURE(width);
      CAPTURE(silu);
      // The sequence x is the second half of a (batch, length, 2*dim) tensor: x_batch_stride > dim.
      Tensor xz = uniform({batch, length, 2 * dim}, -1, 1, rng);
      Tensor x = xz.narrow(2, dim, dim).contiguous();
      Tensor w = uniform({dim, width}, -1, 1, rng), b = uniform({dim}, -1, 1, rng);
      Tensor init = uniform({batch, dim, width - 1}, -1, 1, rng);
      Tensor ref = causal_conv1d(x, w, b, silu, init);  // CPU reference
      // conv_state (batch, dim, width): slot 0 is dropped by the first shift.
      Tensor state = Tensor::full({batch, dim, width}, 7.0, DType::Float32, Device::CPU);
      state.narrow(2, 1, width - 1).copy_(init);
      Tensor state_gpu = state.to(Device::CUDA), w_gpu = w.to(Device::CUDA), b_gpu = b.to(Device::CUDA);
      Tensor xz_gpu = xz.to(Device::CUDA);
      std::vector<Tensor> outs;
      for (int64_t t = 0; t < length; ++t) {
        Tensor out = Tensor::full({batch, dim}, std::nan(""), DType::Float32, Device::CUDA);
        const float* xt = xz_gpu.data<float>() + t * 2 * dim + dim;
        kernels::cuda::causal_conv1d_update<float>(out.data<float>(), state_gpu.data<float>(), xt,
                                                   w_gpu.data<float>(), b_gpu.data<float>(), silu, batch, dim,
                                                   width, length * 2 * dim, cuda::current_stream());
        outs.push_back(out.to(Device::CPU));
      }
      for (int64_t t = 0; t < length; ++t) {
        CAPTURE(t);
        CHECK(rel_err(outs[t], ref.narrow(1, t, 1).contiguous().view({batch, dim})) < 1e-5);
      }
      // The final state holds the last `width` inputs.
      CHECK(rel_err(state_gpu, x.narrow(1, length - width, width).transpose(1, 2).contiguous()) == 0);
    }
  }
}
#endif

TEST_CASE("cuda ops: rmsnorm_add vs CPU (with/without residual / both outputs / odd widths)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(105);
  // Widths up to 1024 run a warp per row (1, 2, 4, 16, 24 columns per lane here); 1030 a block per row.
  const Shape shapes[] = {{1, 1, 6}, {2, 3, 33}, {5, 300}, {2000, 17}, {4100, 100}, {3, 768}, {3, 1030}};
  for (DType dt : kDtypes) {
    for (const Shape& s : shapes) {
      CAPTURE(shape_str(s));
      Tensor x = rand_input(s, rng, dt), r = rand_input(s, rng, dt);
      Tensor w = rand_input({s.back()}, rng, dt, 0.5, 1.5);
      compare_op(
          "rmsnorm_add",
          [](const auto& in) {
            auto [y, sum] = rmsnorm_add(in[0], in[1], in[2], 1e-5);
            return std::vector<Tensor>{y, sum};
          },
          {x, r, w}, {true, true, true}, dt, rng);
      compare_op(
          "rmsnorm (no residual)",
          [](const auto& in) { return std::vector<Tensor>{rmsnorm_add(in[0], Tensor(), in[1], 1e-5).first}; },
          {x, w}, {true, true}, dt, rng);
    }
  }
}

TEST_CASE("cuda ops: embedding vs CPU (int32/int64 ids / vocab and width tiles / many positions)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(106);
  struct Dims {
    Shape ids;
    int64_t vocab, width;
  };
  const Dims cases[] = {
      {{1}, 11, 7}, {{2, 37}, 11, 130}, {{5000}, 13, 64}, {{4, 300}, 1000, 300}, {{3, 5}, 70, 1}};
  for (DType dt : kDtypes) {
    for (const Dims& c : cases) {
      for (DType it : {DType::Int32, DType::Int64}) {
        CAPTURE(shape_str(c.ids));
        CAPTURE(c.vocab);
        CAPTURE(c.width);
        Tensor ids = randint(c.ids, 0, c.vocab, rng, it);
        Tensor w = rand_input({c.vocab, c.width}, rng, dt);
        compare_op(
            "embedding", [](const auto& in) { return std::vector<Tensor>{embedding(in[0], in[1])}; }, {ids, w},
            {false, true}, dt, rng);
      }
    }
  }
}

TEST_CASE("cuda ops: embedding backward is bit-identical across runs / bad ids are flagged") {
  SKIP_WITHOUT_CUDA();
  Philox rng(107);
  // Skewed ids (many repeats of a few tokens) over several position chunks.
  Tensor ids = randint({8, 1024}, 0, 5, rng, DType::Int64, Device::CUDA);
  Tensor w = uniform({40, 96}, -1, 1, rng, DType::Float32, Device::CUDA);
  Tensor cot = uniform({8, 1024, 96}, -1, 1, rng, DType::Float32, Device::CUDA);
  Tensor grads[2];
  for (int run = 0; run < 2; ++run) {
    Tensor wr = w.clone().requires_grad_();
    autograd::backward(embedding(ids, wr), cot);
    grads[run] = wr.grad();
  }
  CHECK(bit_equal(grads[0], grads[1]));
  check_index_errors(Device::CUDA);  // clean so far
  Tensor bad = Tensor::from_vector<int64_t>({1, 40, 2}, {3}, Device::CUDA);
  Tensor out = embedding(bad, w);
  CHECK_THROWS_WITH_AS(check_index_errors(Device::CUDA), doctest::Contains("id 40 at position 1"), s6::Error);
  CHECK_NOTHROW(check_index_errors(Device::CUDA));  // reset after reporting
  std::vector<double> row = host_values(out.narrow(0, 1, 1));
  CHECK(std::isnan(row[0]));
}

TEST_CASE("cuda ops: cross_entropy vs CPU (ignore_index / all ignored / int32/int64 / bf16)") {
  SKIP_WITHOUT_CUDA();
  Philox rng(108);
  struct Dims {
    int64_t rows, vocab;
  };
  // Odd vocabularies put rows off the 16-byte vector boundary (scalar head and tail); 50280 is the
  // LM's; the wide range (+-30) makes the online log-sum-exp rescale often.
  struct Range {
    double lo, hi;
  };
  // Up to 1024 a warp takes a row (many rows of vocab 16: the synthetic tasks), above a block.
  const Dims cases[] = {{1, 5},     {13, 1000},  {300, 37}, {7, 5000}, {3, 50280},
                        {5, 50281}, {70001, 16}, {9, 1024}, {9, 1025}};
  for (DType dt : kDtypes) {
    for (const Dims& c : cases) {
      for (DType it : {DType::Int32, DType::Int64}) {
        CAPTURE(c.rows);
        CAPTURE(c.vocab);
        const Range range = it == DType::Int32 ? Range{-4, 4} : Range{-30, 30};
        Tensor logits = rand_input({c.rows, c.vocab}, rng, dt, range.lo, range.hi);
        Tensor targets = randint({c.rows}, 0, c.vocab, rng, DType::Int64);
        std::vector<int64_t> tv = targets.to_vector<int64_t>();
        for (size_t r = 0; r < tv.size(); r += 3) tv[r] = -100;  // some ignored rows
        if (c.rows == 1) tv[0] = 2;
        Tensor t = Tensor::from_vector<int64_t>(tv, {c.rows}).to(it);
        compare_op(
            "cross_entropy", [](const auto& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1])}; },
            {logits, t}, {true, false}, dt, rng);
      }
    }
  }
  SUBCASE("-inf logits (masked entries) and a NaN row") {
    std::vector<float> v(4 * 21);
    for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 3 == 0) ? -INFINITY : static_cast<float>(i % 7) - 3.f;
    Tensor logits = Tensor::from_vector<float>(v, {4, 21});
    Tensor t = Tensor::from_vector<int64_t>({1, 2, 4, 5}, {4});
    compare_op(
        "cross_entropy (-inf)", [](const auto& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1])}; },
        {logits, t}, {true, false}, DType::Float32, rng);
    v[30] = NAN;
    Tensor with_nan = Tensor::from_vector<float>(v, {4, 21}).to(Device::CUDA);
    CHECK(std::isnan(cross_entropy(with_nan, t.to(Device::CUDA)).item()));
  }
  SUBCASE("every row ignored: loss 0, gradient 0") {
    Tensor logits = uniform({4, 9}, -1, 1, rng, DType::Float32, Device::CUDA).requires_grad_();
    Tensor t = Tensor::full({4}, -100, DType::Int64, Device::CUDA);
    Tensor loss = cross_entropy(logits, t);
    CHECK(loss.item() == 0.0);
    autograd::backward(loss);
    CHECK(rel_err(logits.grad(), Tensor::zeros({4, 9})) == 0.0);
  }
  SUBCASE("a bad target is flagged and makes the loss NaN") {
    Tensor logits = uniform({3, 9}, -1, 1, rng, DType::Float32, Device::CUDA);
    Tensor t = Tensor::from_vector<int64_t>({1, 2, 9}, {3}, Device::CUDA);
    Tensor loss = cross_entropy(logits, t);
    CHECK(std::isnan(loss.item()));
    CHECK_THROWS_WITH_AS(check_index_errors(Device::CUDA), doctest::Contains("id 9 at position 2"), s6::Error);
  }
}

TEST_CASE("cuda ops: elementwise / broadcasting and sum_to_shape vs CPU") {
  SKIP_WITHOUT_CUDA();
  Philox rng(109);
  struct Pair {
    Shape a, b;
  };
  const Pair pairs[] = {{{2, 3, 4}, {4}},
                        {{3, 1, 5}, {1, 4, 5}},
                        {{7, 9}, {7, 9}},
                        {{5, 6, 7}, {5, 1, 7}},
                        {{4, 300}, {4, 1}},
                        {{1}, {3, 2}},
                        {{2, 1, 3, 1}, {1, 5, 1, 4}}};
  for (DType dt : kDtypes) {
    for (const Pair& p : pairs) {
      CAPTURE(shape_str(p.a));
      CAPTURE(shape_str(p.b));
      Tensor a = rand_input(p.a, rng, dt), b = rand_input(p.b, rng, dt);
      compare_op(
          "add", [](const auto& in) { return std::vector<Tensor>{add(in[0], in[1])}; }, {a, b}, {true, true},
          dt, rng);
      compare_op(
          "sub", [](const auto& in) { return std::vector<Tensor>{sub(in[0], in[1])}; }, {a, b}, {true, true},
          dt, rng);
      compare_op(
          "mul", [](const auto& in) { return std::vector<Tensor>{mul(in[0], in[1])}; }, {a, b}, {true, true},
          dt, rng);
    }
    Tensor x = rand_input({3, 41, 5}, rng, dt, -3, 3);
    Tensor big = rand_input({2, 7}, rng, dt, 15, 25);  // softplus's linear branch above 20
    for (const Tensor& in : {x, big}) {
      compare_op(
          "exp", [](const auto& v) { return std::vector<Tensor>{exp(v[0])}; }, {in}, {true}, dt, rng);
      compare_op(
          "neg_exp", [](const auto& v) { return std::vector<Tensor>{neg_exp(v[0])}; }, {in}, {true}, dt, rng);
      compare_op(
          "silu", [](const auto& v) { return std::vector<Tensor>{silu(v[0])}; }, {in}, {true}, dt, rng);
      compare_op(
          "softplus", [](const auto& v) { return std::vector<Tensor>{softplus(v[0])}; }, {in}, {true}, dt, rng);
    }
    compare_op(
        "scale", [](const auto& v) { return std::vector<Tensor>{scale(v[0], -0.37)}; }, {x}, {true}, dt, rng);
    compare_op(
        "sum", [](const auto& v) { return std::vector<Tensor>{sum(v[0])}; }, {x}, {true}, dt, rng);
    Tensor long_x = rand_input({1000, 301}, rng, dt);
    compare_op(
        "mean", [](const auto& v) { return std::vector<Tensor>{mean(v[0])}; }, {long_x}, {true}, dt, rng);
  }
  SUBCASE("sum_to_shape directly (leading, trailing, middle and scattered dims)") {
    Tensor g = uniform({6, 5, 4, 3}, -1, 1, rng);
    const Shape targets[] = {{3}, {4, 3}, {6, 1, 1, 1}, {6, 5, 1, 1}, {1, 5, 1, 3}, {5, 1, 1}, {1}, {}};
    for (const Shape& s : targets) {
      CAPTURE(shape_str(s));
      Tensor out = sum_to_shape(g.to(Device::CUDA), s);
      CHECK(out.shape() == s);
      CHECK(rel_err(out, sum_to_shape(g, s)) < 1e-5);
    }
  }
}

TEST_CASE("cuda ops: shape ops and to_dtype keep gradients on the device") {
  SKIP_WITHOUT_CUDA();
  Philox rng(110);
  Tensor x = rand_input({2, 6, 4}, rng, DType::Float32);
  compare_op(
      "split/transpose/reshape/narrow/expand/to_dtype",
      [](const auto& in) {
        auto parts = split(in[0], {2, 4}, 1);
        Tensor t = transpose(parts[1], 1, 2);
        Tensor r = reshape(contiguous(t), {2, 16});
        Tensor n = narrow(in[0], 2, 1, 2);
        Tensor e = expand(narrow(in[0], 1, 0, 1), {2, 3, 4});
        Tensor d = to_dtype(to_dtype(parts[0], DType::Float64), in[0].dtype());
        return std::vector<Tensor>{r, n, e, d};
      },
      {x}, {true}, DType::Float32, rng);
}
