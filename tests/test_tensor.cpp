// Tensor core: shapes, views, copies across dtypes, bfloat16 rounding, the Philox RNG.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/cuda_runtime.h"
#include "core/philox.h"
#include "core/random.h"
#include "core/tensor.h"
#include "core/tensor_kernels.h"

using namespace s6;

TEST_CASE("tensor: contiguous strides, views share storage, copies do not") {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK(t.strides() == Shape{3, 1});
  Tensor tt = t.transpose(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK_FALSE(tt.is_contiguous());
  CHECK(tt.contiguous().to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor col = t.narrow(1, 1, 2);
  CHECK(col.to_vector<float>() == std::vector<float>{1, 2, 4, 5});
  col.fill_(9);  // writes through the view
  CHECK(t.to_vector<float>() == std::vector<float>{0, 9, 9, 3, 9, 9});
  Tensor c = t.clone();
  c.fill_(0);
  CHECK(t.to_vector<float>()[1] == 9);
  CHECK(t.view({3, -1}).shape() == Shape{3, 2});
  CHECK(t.permute({1, 0}).to_vector<float>() == tt.to_vector<float>());
  Tensor e = Tensor::from_vector<float>({1, 2}, {2, 1}).expand({2, 3});
  CHECK(e.to_vector<float>() == std::vector<float>{1, 1, 1, 2, 2, 2});
}

// Views of a tensor whose values are their own flat index: element (i0..in) of a view must equal
// offset + sum(ik * stride_k), computed here without any copy kernel.
std::vector<double> expected_view_values(const Tensor& view) {
  const double first = view.narrow(0, 0, 1).contiguous().to(DType::Float64).to_vector<double>()[0];
  std::vector<double> out;
  std::vector<int64_t> idx(view.dim(), 0);
  for (int64_t k = 0; k < view.numel(); ++k) {
    double v = first;
    for (int64_t d = 0; d < view.dim(); ++d) v += static_cast<double>(idx[d] * view.strides()[d]);
    out.push_back(v);
    for (int64_t d = view.dim() - 1; d >= 0 && ++idx[d] == view.size(d); --d) idx[d] = 0;
  }
  return out;
}

std::vector<Tensor> awkward_views(const Tensor& base) {  // base (3, 1, 5, 6)
  return {base,
          base.narrow(3, 2, 3),  // rows of 3 inside rows of 6
          base.narrow(2, 1, 3),  // a middle-dimension slice
          base.transpose(2, 3),  // unit stride no longer last
          base.permute({3, 1, 0, 2}),
          base.narrow(0, 1, 1).narrow(3, 5, 1),                        // size-1 dimensions everywhere
          base.narrow(3, 0, 1).expand({3, 4, 5, 6}).narrow(1, 0, 4)};  // stride 0
}

TEST_CASE("tensor: strided copies of awkward views match their index formula (CPU)") {
  std::vector<double> values(3 * 5 * 6);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i);
  Tensor base = Tensor::from_vector<double>(values, {3, 1, 5, 6});
  for (const Tensor& v : awkward_views(base)) {
    CAPTURE(v.describe());
    CHECK(v.contiguous().to_vector<double>() == expected_view_values(v));
    Tensor dst = Tensor::zeros({v.numel()}, DType::Float64).view(v.shape());
    if (v.strides().back() != 0) CHECK(dst.copy_(v).to_vector<double>() == expected_view_values(v));
  }
  // coalesce_dims: (3,1,5,6) contiguous is one dimension; a narrowed last dim leaves two.
  detail::StridedShape shape{4, {3, 1, 5, 6}, 90};
  detail::StridedView view{nullptr, DType::Float32, {30, 30, 6, 1}};
  detail::coalesce_dims(shape, &view, 1);
  CHECK(shape.ndim == 1);
  CHECK(shape.sizes[0] == 90);
  detail::StridedShape narrowed{4, {3, 1, 5, 3}, 45};
  detail::StridedView nv{nullptr, DType::Float32, {30, 30, 6, 1}};
  detail::coalesce_dims(narrowed, &nv, 1);
  CHECK(narrowed.ndim == 2);
  CHECK(narrowed.sizes[0] == 15);
  CHECK(nv.strides[0] == 6);
}

TEST_CASE("tensor: dtype conversions, including bfloat16 round-to-nearest-even") {
  Tensor d = Tensor::from_vector<double>({1.5, -2.25, 1e-3}, {3});
  CHECK(d.to(DType::Float32).to_vector<float>() == std::vector<float>{1.5f, -2.25f, 1e-3f});
  CHECK(d.to(DType::Int64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 0});
  CHECK(static_cast<float>(BFloat16(1.0f + 1.0f / 256)) == 1.0f);              // tie rounds to even
  CHECK(static_cast<float>(BFloat16(1.0f + 3.0f / 256)) == 1.0f + 1.0f / 64);  // tie rounds up to even
  CHECK(std::isnan(static_cast<float>(BFloat16(NAN))));
  Tensor b = d.to(DType::BFloat16).to(DType::Float64);
  std::vector<double> back = b.to_vector<double>();
  CHECK(back[0] == 1.5);
  CHECK(std::fabs(back[2] - 1e-3) < 1e-5);
}

TEST_CASE("tensor: errors name the op, the shapes and the dtypes") {
  Tensor t = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(t.view({4, 2}), doctest::Contains("view[4, 2] has 8 elements but float32[2, 3] cpu"),
                       Error);
  CHECK_THROWS_WITH_AS(t.data<double>(), doctest::Contains("data<float64>() on a float32[2, 3] cpu"), Error);
  CHECK_THROWS_WITH_AS(t.narrow(1, 2, 2), doctest::Contains("narrow(dim 1, start 2, length 2)"), Error);
  CHECK_THROWS_AS(Tensor::from_vector<int32_t>({1}, {2}), Error);
}

TEST_CASE("philox: two-integer state is reproducible and seekable") {
  Philox a(42), b(42);
  std::vector<uint32_t> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.next_u32());
  for (int i = 0; i < 10; ++i) CHECK(b.next_u32() == first[i]);
  Philox c(42);
  c.seek(7);
  CHECK(c.next_u32() == first[7]);
  Philox other_stream(42, 1);
  CHECK(other_stream.next_u32() != first[0]);
  Philox d(43);
  CHECK(d.next_u32() != first[0]);
  // Uniform and below() stay in range and spread out.
  std::set<uint64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    double u = a.uniform();
    CHECK((u >= 0.0 && u < 1.0));
    seen.insert(a.below(10));
  }
  CHECK(seen.size() == 10);
  double acc = 0, acc2 = 0;
  for (int i = 0; i < 20000; ++i) {
    double n = a.normal();
    acc += n;
    acc2 += n * n;
  }
  CHECK(std::fabs(acc / 20000) < 0.03);
  CHECK(std::fabs(acc2 / 20000 - 1.0) < 0.05);
}

TEST_CASE("cuda: device copies round-trip (skips without a GPU)") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  Philox rng(5);
  Tensor h = uniform({3, 5, 7}, -1, 1, rng);
  Tensor d = h.to(Device::CUDA);
  CHECK(d.is_cuda());
  CHECK(d.to(Device::CPU).to_vector<float>() == h.to_vector<float>());
  Tensor dt = d.transpose(0, 2).contiguous();  // CUDA strided copy
  CHECK(dt.to(Device::CPU).to_vector<float>() == h.transpose(0, 2).contiguous().to_vector<float>());
  Tensor bf = d.to(DType::BFloat16).to(DType::Float32).to(Device::CPU);
  CHECK(bf.to_vector<float>() == h.to(DType::BFloat16).to(DType::Float32).to_vector<float>());
  Tensor acc = Tensor::zeros({3, 5, 7}, DType::Float32, Device::CUDA);
  acc.add_(d).add_(d, 0.5);
  std::vector<float> got = acc.to_vector<float>(), want = h.to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(1.5 * want[i]));
  std::vector<double> values(3 * 5 * 6);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i);
  Tensor base = Tensor::from_vector<double>(values, {3, 1, 5, 6});
  for (const Tensor& v : awkward_views(base.to(Device::CUDA))) {  // fill + copy with conversion
    CAPTURE(v.describe());
    CHECK(v.contiguous().to(Device::CPU).to_vector<double>() == expected_view_values(v));
    Tensor as_float = Tensor::full(v.shape(), -1.0, DType::Float32, Device::CUDA);
    as_float.copy_(v);
    std::vector<double> want = expected_view_values(v);
    std::vector<float> got = as_float.to(Device::CPU).to_vector<float>();
    for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == static_cast<float>(want[i]));
  }
  auto before = cuda::allocator_stats().device_allocations;
  for (int i = 0; i < 10; ++i) Tensor::empty({3, 5, 7}, DType::Float32, Device::CUDA);
  CHECK(cuda::allocator_stats().device_allocations == before);  // served from the cache
}

namespace {
// Row-wise argmax written out the plain way: the first maximum, NaNs never win unless first.
std::vector<int32_t> naive_argmax(const std::vector<float>& v, int64_t rows, int64_t width) {
  std::vector<int32_t> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t best = 0;
    for (int64_t j = 1; j < width; ++j)
      if (v[r * width + j] > v[r * width + best]) best = j;
    out[r] = static_cast<int32_t>(best);
  }
  return out;
}

// Rows with ties, -inf, NaN (first and not first), and values drawn from a few levels so that
// ties between lanes of a warp are common.
Tensor awkward_rows(int64_t rows, int64_t width, Philox& rng) {
  std::vector<float> v(rows * width);
  for (auto& x : v) x = static_cast<float>(std::floor(rng.uniform() * 5.0));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = v.data() + r * width;
    switch (r % 6) {
      case 1: std::fill(row, row + width, -INFINITY); break;
      case 2: row[0] = NAN; break;
      case 3: row[width / 2] = NAN; break;
      case 4: std::fill(row, row + width, 7.0f); break;  // all tied: index 0
      default: break;
    }
  }
  return Tensor::from_vector<float>(v, {rows, width});
}
}  // namespace

TEST_CASE("tensor: argmax_last takes the first maximum and never a NaN, in every float dtype") {
  Philox rng(21);
  for (int64_t width : {1, 2, 5, 31, 32, 33, 100}) {
    CAPTURE(width);
    Tensor t = awkward_rows(13, width, rng);
    std::vector<int32_t> want = naive_argmax(t.to_vector<float>(), 13, width);
    CHECK(t.argmax_last().to_vector<int32_t>() == want);
    CHECK(t.to(DType::Float64).argmax_last().to_vector<int32_t>() == want);
    CHECK(t.view({13, 1, width}).argmax_last().shape() == Shape{13, 1});
    Tensor bf = t.to(DType::BFloat16);  // the small integer levels are exact in bf16
    CHECK(bf.argmax_last().to_vector<int32_t>() == want);
  }
  CHECK_THROWS_WITH_AS(Tensor::zeros({3, 4}, DType::Int32).argmax_last(), doctest::Contains("floating"), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({3, 0}).argmax_last(), doctest::Contains("last dimension"), Error);
}

TEST_CASE("cuda: argmax_last matches the CPU on awkward rows (skips without a GPU)") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  Philox rng(22);
  struct Case {
    int64_t rows, width;
  };
  for (Case c : {Case{1, 1}, Case{7, 16}, Case{300, 33}, Case{12, 50280}, Case{70001, 3}}) {
    CAPTURE(c.rows);
    CAPTURE(c.width);
    Tensor t = awkward_rows(c.rows, c.width, rng);
    std::vector<int32_t> want = t.argmax_last().to_vector<int32_t>();
    for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
      Tensor got = t.to(dt).to(Device::CUDA).argmax_last();
      CHECK(got.is_cuda());
      CHECK(got.to(Device::CPU).to_vector<int32_t>() == want);
    }
  }
  // Non-contiguous input: a transposed view is made contiguous first.
  Tensor t = awkward_rows(40, 24, rng);
  Tensor tv = t.transpose(0, 1);
  CHECK(tv.to(Device::CUDA).argmax_last().to(Device::CPU).to_vector<int32_t>() ==
        tv.argmax_last().to_vector<int32_t>());
}

namespace {
// The reference join: each part copied into its slice.
Tensor concat_by_slices(const std::vector<Tensor>& parts, int64_t dim) {
  Shape shape = parts[0].shape();
  shape[dim] = 0;
  for (const Tensor& p : parts) shape[dim] += p.size(dim);
  Tensor out = Tensor::zeros(shape, parts[0].dtype());
  int64_t at = 0;
  for (const Tensor& p : parts) {
    out.narrow(dim, at, p.size(dim)).copy_(p);
    at += p.size(dim);
  }
  return out;
}
}  // namespace

TEST_CASE("tensor: concat joins parts along any dimension, on the CPU and on CUDA") {
  Philox rng(31);
  const bool gpu = cuda::available();
  if (!gpu) MESSAGE("SKIPPED (CUDA half): no CUDA device on this machine");
  for (int64_t dim : {0, 1, 2}) {
    for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64, DType::Int32}) {
      CAPTURE(dim);
      CAPTURE(dtype_name(dt));
      std::vector<Tensor> parts;
      for (int64_t size : {4, 1, 16, 0, 3}) {
        Shape s = {3, 5, 7};
        s[dim] = size;
        parts.push_back(uniform(s, -4, 4, rng).to(dt));
      }
      parts[2] = parts[2].transpose(0, 2).contiguous().transpose(0, 2);  // a strided part
      const std::vector<float> want = concat_by_slices(parts, dim).to(DType::Float32).to_vector<float>();
      CHECK(Tensor::concat(parts, dim).to(DType::Float32).to_vector<float>() == want);
      if (gpu) {
        std::vector<Tensor> dev;
        for (const Tensor& p : parts) dev.push_back(p.to(Device::CUDA));
        Tensor got = Tensor::concat(dev, dim);
        CHECK(got.is_cuda());
        CHECK(got.to(Device::CPU).to(DType::Float32).to_vector<float>() == want);
      }
    }
  }
  std::vector<Tensor> nine(9, Tensor::full({2, 1}, 1.0));  // more parts than one launch takes
  CHECK(Tensor::concat(nine, 1).to_vector<float>() == std::vector<float>(18, 1.f));
  CHECK_THROWS_WITH_AS(Tensor::concat({Tensor::zeros({2, 3}), Tensor::zeros({3, 3})}, 1),
                       doctest::Contains("differs from"), Error);
}

TEST_CASE(
    "cuda: add_ 16 bytes at a time is bitwise the one-element path, and the CPU's within rounding (skips "
    "without a GPU)") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  Philox rng(31);
  // The same values added at a 16-byte aligned address (the vector path for sizes that are
  // multiples of 16 bytes) and one element further (the one-element path); alpha 1 (gradient
  // sums) and another. Against the CPU: the device may fuse alpha * src + dst into one double FMA
  // (one rounding fewer), so the results agree to the element type's rounding, not always bitwise.
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
    for (int64_t n : {int64_t(8), int64_t(4096), int64_t(1 << 20), int64_t(1000001), int64_t(7)}) {
      for (double alpha : {1.0, -0.37}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(n);
        CAPTURE(alpha);
        Tensor a = uniform({n}, -3, 3, rng).to(dt), b = uniform({n}, -3, 3, rng).to(dt);
        Tensor aligned = a.to(Device::CUDA), src = b.to(Device::CUDA);
        Tensor shifted = Tensor::zeros({n + 1}, dt, Device::CUDA).narrow(0, 1, n);
        Tensor shifted_src = Tensor::zeros({n + 1}, dt, Device::CUDA).narrow(0, 1, n);
        shifted.copy_(aligned);
        shifted_src.copy_(src);
        aligned.add_(src, alpha);
        shifted.add_(shifted_src, alpha);
        const std::vector<double> got = aligned.to(Device::CPU).to(DType::Float64).to_vector<double>();
        CHECK(got == shifted.to(Device::CPU).to(DType::Float64).to_vector<double>());
        const std::vector<double> want = a.add_(b, alpha).to(DType::Float64).to_vector<double>();
        const double ulp = dt == DType::BFloat16 ? 1.0 / 128 : dt == DType::Float32 ? 1.2e-7 : 2.3e-16;
        double worst = 0;
        for (int64_t i = 0; i < n; ++i)
          worst = std::max(worst, std::abs(got[i] - want[i]) / std::max(1.0, std::abs(want[i])));
        CHECK(worst <= ulp * 8);
      }
    }
  }
}
