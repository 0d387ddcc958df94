// The device task generators against the host ones: every task, both sides of each draw's byte /
// word path, both loss_positions, ranks, splits and awkward batch sizes, bit for bit; and the
// evaluation's batches, which use them on CUDA.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "data/task.h"
#include "trainer/evaluate.h"

using namespace s6;

namespace {

struct Case {
  std::string task;
  data::TaskParams params;
};

data::TaskParams params(int64_t vocab, int64_t seq_len, int64_t num_tokens,
                        data::LossPositions loss = data::LossPositions::Last) {
  data::TaskParams p;
  p.vocab = vocab;
  p.seq_len = seq_len;
  p.num_tokens = num_tokens;
  p.loss_positions = loss;
  return p;
}

// Batch k of rank `rank` generated on the device (eval_targets in a buffer of its own when
// `own_eval`) and on the host: the same int32 values everywhere.
void check_same_as_host(const Case& c, int64_t batch, uint64_t seed, uint64_t k, uint32_t rank,
                        data::Split split, bool own_eval) {
  auto task = data::make_task(c.task, c.params);
  CAPTURE(c.task);
  CAPTURE(c.params.vocab);
  CAPTURE(c.params.seq_len);
  CAPTURE(c.params.num_tokens);
  CAPTURE(batch);
  CAPTURE(rank);
  const data::Batch host = task->sample(batch, seed, k, rank, split);
  data::Batch dev = task->make_batch(batch, Device::CUDA);
  for (Tensor* t : {&dev.inputs, &dev.targets, &dev.eval_targets}) t->fill_(-7);  // poison
  if (own_eval && !task->separate_eval_targets())  // a buffer of its own gets a copy of the targets
    dev.eval_targets = Tensor::full(dev.targets.shape(), -7, DType::Int32, Device::CUDA);
  Tensor index = Tensor::from_vector<int64_t>({static_cast<int64_t>(k)}, {1}, Device::CUDA);
  task->sample_on_device(dev, seed, reinterpret_cast<const uint64_t*>(index.data<int64_t>()), rank, split);
  CHECK(dev.inputs.to(Device::CPU).to_vector<int32_t>() == host.inputs.to_vector<int32_t>());
  CHECK(dev.targets.to(Device::CPU).to_vector<int32_t>() == host.targets.to_vector<int32_t>());
  CHECK(dev.eval_targets.to(Device::CPU).to_vector<int32_t>() == host.eval_targets.to_vector<int32_t>());
}

#define SKIP_WITHOUT_CUDA()                             \
  if (!s6::cuda::available()) {                         \
    MESSAGE("SKIPPED: no CUDA device on this machine"); \
    return;                                             \
  }

}  // namespace

TEST_CASE("data on the device: induction heads is bitwise the host generator") {
  SKIP_WITHOUT_CUDA();
  using data::LossPositions;
  // (vocab, seq_len): ordinary tokens drawn from bytes (vocab - 2 <= 256) or words, the trigger
  // from bytes (seq_len - 3 <= 256) or words; the smallest sizes; the paper's config.
  const std::vector<std::pair<int64_t, int64_t>> sizes{{16, 256},   {16, 259}, {16, 260}, {258, 77}, {259, 77},
                                                       {300, 1000}, {3, 4},    {5, 5},    {16, 4097}};
  for (auto [vocab, len] : sizes)
    for (LossPositions loss : {LossPositions::Last, LossPositions::All})
      for (int64_t batch : {1, 5, 9})
        check_same_as_host({"induction_heads", params(vocab, len, 16, loss)}, batch, 11, 3, 0,
                           data::Split::Train, false);
  check_same_as_host({"induction_heads", params(16, 256, 16)}, 7, 5, 123456789, 3, data::Split::Validation,
                     false);
  check_same_as_host({"induction_heads", params(16, 256, 16)}, 6, 5, 2, 1, data::Split::Train, true);
}

TEST_CASE("data on the device: copying and selective copying are bitwise the host generators") {
  SKIP_WITHOUT_CUDA();
  // (vocab, seq_len, num_tokens): the paper's selective copying, the shortest sequences, Floyd's
  // draws on both the byte (j + 1 <= 256) and the word path, data tokens from words (vocab 300).
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> sizes{
      {16, 4096, 16}, {3, 3, 1}, {16, 41, 20}, {16, 700, 300}, {300, 1000, 33}, {10, 129, 64}};
  for (const char* name : {"copying", "selective_copying"})
    for (auto [vocab, len, m] : sizes)
      for (int64_t batch : {1, 3, 64})
        check_same_as_host({name, params(vocab, len, m)}, batch, 7, 9, 0, data::Split::Train, false);
  check_same_as_host({"selective_copying", params(16, 4096, 16)}, 4, 1, 77, 2, data::Split::Validation, true);
}

TEST_CASE("data on the device: the evaluation's CUDA batches are its host batches") {
  SKIP_WITHOUT_CUDA();
  using data::LossPositions;
  const std::vector<Case> cases{{"induction_heads", params(16, 1000, 16, LossPositions::Last)},
                                {"induction_heads", params(16, 300, 16, LossPositions::All)},
                                {"selective_copying", params(16, 500, 16)}};
  for (const Case& c : cases) {
    CAPTURE(c.task);
    CAPTURE(c.params.seq_len);
    auto task = data::make_task(c.task, c.params);
    const trainer::EvalBatch d = trainer::eval_batch(*task, 5, 3, 9, Device::CUDA);
    const trainer::EvalBatch h = trainer::eval_batch(*task, 5, 3, 9, Device::CPU);
    CHECK(d.inputs.is_cuda());
    CHECK(d.device_targets.is_cuda());
    CHECK(!d.targets.is_cuda());
    CHECK(d.inputs.to(Device::CPU).to_vector<int32_t>() == h.inputs.to_vector<int32_t>());
    CHECK(d.device_targets.to(Device::CPU).to_vector<int32_t>() == h.device_targets.to_vector<int32_t>());
    CHECK(d.targets.to_vector<int32_t>() == h.targets.to_vector<int32_t>());
    CHECK(d.eval_targets.to_vector<int32_t>() == h.eval_targets.to_vector<int32_t>());
  }
}
