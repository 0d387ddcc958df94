// Synthetic task generators (data/): determinism, rank disjointness, formats, validation sets, errors.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "data/copying.h"
#include "data/induction.h"
#include "data/task.h"

using namespace s6;
using namespace s6::data;

namespace {

TaskParams params(int64_t vocab, int64_t seq_len, int64_t m = 16, LossPositions lp = LossPositions::Last) {
  TaskParams p;
  p.vocab = vocab;
  p.seq_len = seq_len;
  p.num_tokens = m;
  p.loss_positions = lp;
  return p;
}

std::vector<int32_t> all_of(const Batch& b) {
  std::vector<int32_t> v = b.inputs.to_vector<int32_t>();
  for (const Tensor* t : {&b.targets, &b.eval_targets}) {
    std::vector<int32_t> w = t->to_vector<int32_t>();
    v.insert(v.end(), w.begin(), w.end());
  }
  return v;
}

std::vector<std::vector<int32_t>> rows(const Tensor& t) {
  std::vector<int32_t> v = t.to_vector<int32_t>();
  int64_t L = t.size(1);
  std::vector<std::vector<int32_t>> r;
  for (int64_t i = 0; i < t.size(0); ++i) r.emplace_back(v.begin() + i * L, v.begin() + (i + 1) * L);
  return r;
}

std::string error_of(const std::string& name, const TaskParams& p) {
  try {
    make_task(name, p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kTasks[] = {"copying", "selective_copying", "induction_heads"};

}  // namespace

TEST_CASE("data: batch k of rank r is a pure function of (seed, k, r)") {
  for (const char* name : kTasks) {
    CAPTURE(name);
    auto task = make_task(name, params(16, 256));
    auto a = all_of(task->sample(8, 7, 3, 1));
    CHECK(a == all_of(task->sample(8, 7, 3, 1)));
    CHECK(a != all_of(task->sample(8, 7, 4, 1)));  // other step
    CHECK(a != all_of(task->sample(8, 7, 3, 2)));  // other rank
    CHECK(a != all_of(task->sample(8, 8, 3, 1)));  // other seed
    // Rank r holds examples r*B..r*B+B-1 of the global batch; thread count does not matter.
    Batch whole = task->sample(16, 7, 3, 0);
    auto r0 = task->sample(8, 7, 3, 0).inputs.to_vector<int32_t>();
    auto r1 = task->sample(8, 7, 3, 1).inputs.to_vector<int32_t>();
    r0.insert(r0.end(), r1.begin(), r1.end());
    CHECK(r0 == whole.inputs.to_vector<int32_t>());
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    auto single = all_of(task->sample(64, 7, 3, 1));
    omp_set_num_threads(std::max(threads, 4));
    CHECK(single == all_of(task->sample(64, 7, 3, 1)));
    omp_set_num_threads(threads);
  }
}

TEST_CASE("data: ranks and steps give distinct examples") {
  for (const char* name : kTasks) {
    CAPTURE(name);
    auto task = make_task(name, params(16, 512));
    std::set<std::vector<int32_t>> seen;
    int64_t n = 0;
    for (uint64_t k = 0; k < 4; ++k)
      for (uint32_t r = 0; r < 4; ++r)
        for (auto& row : rows(task->sample(16, 1, k, r).inputs)) {
          seen.insert(row);
          ++n;
        }
    CHECK(static_cast<int64_t>(seen.size()) == n);
  }
  // Token frequencies look uniform: induction heads ordinary tokens over 14 values.
  auto task = make_task("induction_heads", params(16, 4096));
  std::vector<int64_t> count(16, 0);
  for (int32_t t : task->sample(16, 2, 0, 3).inputs.to_vector<int32_t>()) ++count[t];
  const double expect = 16.0 * 4095 / 14;
  for (int v = 0; v < 14; ++v) CHECK(std::abs(count[v] - expect) < 0.05 * expect);
  CHECK(count[14] == 2 * 16);  // copy_prefix: trigger + final
  CHECK(count[15] == 0);       // noop unused
}

TEST_CASE("data: copying and selective copying formats") {
  const int64_t A = 16, M = 16, L = 4096, region = L - M;
  for (bool selective : {false, true}) {
    CAPTURE(selective);
    auto task = make_task(selective ? "selective_copying" : "copying", params(A, L, M));
    Batch b = task->sample(32, 5, 0, 0);
    REQUIRE(b.inputs.shape() == Shape{32, L});
    CHECK(b.eval_targets.data_ptr() == b.targets.data_ptr());
    auto in = rows(b.inputs), tg = rows(b.targets);
    double mean_pos = 0;
    bool any_moved = false;
    for (size_t e = 0; e < in.size(); ++e) {
      std::vector<int32_t> pos, data;
      for (int64_t i = 0; i < region; ++i) {
        CHECK(tg[e][i] == kIgnoreIndex);
        if (in[e][i] != 0) {
          pos.push_back(static_cast<int32_t>(i));
          data.push_back(in[e][i]);
        }
      }
      REQUIRE(pos.size() == static_cast<size_t>(M));
      for (int32_t d : data) CHECK((d >= 1 && d <= A - 2));
      for (int64_t i = region; i < L; ++i) CHECK(in[e][i] == A - 1);
      CHECK(std::vector<int32_t>(tg[e].begin() + region, tg[e].end()) == data);
      CHECK(std::is_sorted(pos.begin(), pos.end()));
      if (!selective)
        for (int64_t i = 0; i < M; ++i) CHECK(pos[i] == i);
      any_moved |= pos.back() != M - 1;
      for (int32_t p : pos) mean_pos += p;
    }
    CHECK(any_moved == selective);
    mean_pos /= 32.0 * M;
    if (selective) CHECK(std::abs(mean_pos - (region - 1) / 2.0) < 0.1 * region);
  }
  // Smallest legal length: L_noise = 1.
  Batch b = make_task("selective_copying", params(4, 2 * 3 + 1, 3))->sample(4, 0, 0);
  for (int32_t t : b.inputs.to_vector<int32_t>()) CHECK((t >= 0 && t <= 3));
}

TEST_CASE("data: induction heads format, loss_positions last and all") {
  const int64_t V = 16, L = 256, T = L - 1;
  auto last = make_task("induction_heads", params(V, L));
  auto all = make_task("induction_heads", params(V, L, 16, LossPositions::All));
  Batch bl = last->sample(64, 9, 2, 1), ba = all->sample(64, 9, 2, 1);
  CHECK(bl.inputs.to_vector<int32_t>() == ba.inputs.to_vector<int32_t>());
  CHECK(bl.eval_targets.data_ptr() == bl.targets.data_ptr());
  CHECK(ba.eval_targets.data_ptr() != ba.targets.data_ptr());
  auto in = rows(bl.inputs), tl = rows(bl.targets), ta = rows(ba.targets), ea = rows(ba.eval_targets);
  std::set<int64_t> triggers;
  for (size_t e = 0; e < in.size(); ++e) {
    CHECK(in[e][T] == V - 2);
    std::vector<int64_t> prefixes;
    for (int64_t i = 0; i < T; ++i) {
      CHECK((in[e][i] >= 0 && in[e][i] <= V - 2));
      if (in[e][i] == V - 2) prefixes.push_back(i);
    }
    REQUIRE(prefixes.size() == 1);
    int64_t p = prefixes[0];
    triggers.insert(p);
    CHECK(p < T - 2);
    int32_t value = in[e][p + 1];
    CHECK((value >= 0 && value <= V - 3));
    for (int64_t i = 0; i < T; ++i) {
      CHECK(tl[e][i] == kIgnoreIndex);
      CHECK(ea[e][i] == kIgnoreIndex);
      CHECK(ta[e][i] == in[e][i + 1]);
    }
    CHECK(tl[e][T] == value);
    CHECK(ta[e][T] == value);
    CHECK(ea[e][T] == value);
  }
  CHECK(triggers.size() > 40);  // trigger positions vary
  // Smallest legal length: T = 3, the trigger is at 0 and the value at 1.
  Batch s = make_task("induction_heads", params(3, 4))->sample(8, 1, 0);
  for (auto& r : rows(s.inputs)) CHECK(r == std::vector<int32_t>{1, 0, 0, 1});
}

TEST_CASE("data: validation set is fixed and independent of training batches") {
  for (const char* name : kTasks) {
    CAPTURE(name);
    auto task = make_task(name, params(16, 128));
    auto v1 = task->validation_set(3, 2, 8), v2 = task->validation_set(3, 2, 8);
    REQUIRE(v1.size() == 2);
    std::set<std::vector<int32_t>> train;
    for (uint64_t k = 0; k < 4; ++k)
      for (auto& r : rows(task->sample(8, 3, k, 0).inputs)) train.insert(r);
    for (size_t j = 0; j < 2; ++j) {
      CHECK(all_of(v1[j]) == all_of(v2[j]));
      for (auto& r : rows(v1[j].inputs)) CHECK(train.count(r) == 0);
    }
    CHECK(all_of(v1[0]) != all_of(v1[1]));
  }
}

TEST_CASE("data: sample_into reuses the buffers") {
  auto task = make_task("induction_heads", params(16, 64, 16, LossPositions::All));
  Batch b = task->make_batch(4);
  void* p = b.inputs.data_ptr();
  task->sample_into(b, 1, 5, 2);
  CHECK(b.inputs.data_ptr() == p);
  CHECK(all_of(b) == all_of(task->sample(4, 1, 5, 2)));
  Batch wrong = make_task("induction_heads", params(16, 32))->make_batch(4);
  CHECK_THROWS_AS(task->sample_into(wrong, 1, 5, 2), Error);
}

TEST_CASE("data: invalid params name the parameter and its range") {
  CHECK(error_of("copying", params(16, 32, 16)).find("seq_len = 32") != std::string::npos);
  CHECK(error_of("selective_copying", params(16, 4096, 0)).find("num_tokens") != std::string::npos);
  CHECK(error_of("copying", params(2, 4096)).find("vocab = 2") != std::string::npos);
  CHECK(error_of("copying", params(16, 4096, 16, LossPositions::All)).find("loss_positions") !=
        std::string::npos);
  CHECK(error_of("induction_heads", params(2, 256)).find("vocab") != std::string::npos);
  CHECK(error_of("induction_heads", params(16, 3)).find("seq_len = 3") != std::string::npos);
  CHECK(error_of("associative", params(16, 256)).find("induction_heads") != std::string::npos);
  CHECK_THROWS_WITH_AS(parse_loss_positions("first"), doctest::Contains("loss_positions"), Error);
  CHECK(parse_loss_positions("all") == LossPositions::All);
  CHECK(error_of("induction_heads", params(16, 256)).empty());
}

TEST_CASE("data: accuracy counts argmax == target at non-ignored positions") {
  // 2 x 3 positions, vocab 4; targets ignore the middle column.
  std::vector<float> logits = {0, 5, 1, 0, 9, 0, 0, 0, 0, 0, 0, 3, 2, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  Tensor lg = Tensor::from_vector<float>(logits, {6, 4});
  Tensor tg = Tensor::from_vector<int32_t>({1, kIgnoreIndex, 2, 1, kIgnoreIndex, 0}, {2, 3});
  Accuracy a = accuracy(lg, tg);  // rows: 1==1 yes, 3!=2 no, first max 0 !=1 no, 0==0 yes
  CHECK(a.total == 4);
  CHECK(a.correct == 2);
  CHECK(a.fraction() == doctest::Approx(0.5));
  CHECK(accuracy(lg.to(DType::Float64).view({2, 3, 4}), tg).correct == 2);
  CHECK(accuracy(lg.to(DType::BFloat16), tg).correct == 2);
  Tensor bad = Tensor::from_vector<int32_t>({1, 4, 2, 1, 0, 0}, {2, 3});
  CHECK_THROWS_WITH_AS(accuracy(lg, bad), doctest::Contains("outside [0, 4)"), Error);
  if (cuda::available()) {  // the argmax runs on the device; the counts must not change
    Tensor d = lg.to(Device::CUDA);
    CHECK(accuracy(d, tg).correct == 2);
    CHECK(accuracy(d.to(DType::BFloat16), tg).total == 4);
    CHECK_THROWS_WITH_AS(accuracy(d, bad), doctest::Contains("outside [0, 4)"), Error);
  }
}

TEST_CASE("data: generation time per batch") {
  struct Case {
    const char* name;
    int64_t batch, len;
  };
  for (Case c : {Case{"selective_copying", 64, 4096}, Case{"induction_heads", 64, 4096},
                 Case{"induction_heads", 8, 256}}) {
    auto task = make_task(c.name, params(16, c.len));
    Batch b = task->make_batch(c.batch);
    for (int threads : {1, omp_get_max_threads()}) {
      int saved = omp_get_max_threads();
      omp_set_num_threads(threads);
      task->sample_into(b, 0, 0);
      const int reps = 50;
      auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < reps; ++k) task->sample_into(b, 0, static_cast<uint64_t>(k));
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
                  reps;
      omp_set_num_threads(saved);
      MESSAGE(std::string(c.name) << " " << c.batch << "x" << c.len << ", " << threads << " thread(s): " << ms
                                  << " ms/batch");
    }
  }
}
