// Task base (batch allocation, seeded parallel sampling, validation sets), make_task and accuracy.
#include "data/task.h"

#include <algorithm>

#include "data/copying.h"
#include "data/induction.h"

namespace s6::data {

LossPositions parse_loss_positions(const std::string& s) {
  if (s == "last") return LossPositions::Last;
  if (s == "all") return LossPositions::All;
  S6_FAIL(
      "loss_positions = '{}' must be 'last' (score the answer positions only) or 'all' "
      "(every next-token target; induction_heads only)",
      s);
}

const char* loss_positions_name(LossPositions p) { return p == LossPositions::Last ? "last" : "all"; }

Batch Task::make_batch(int64_t batch_size, Device device) const {
  S6_CHECK(batch_size >= 1, "{}: batch_size = {} must be >= 1", name_, batch_size);
  Batch b;
  b.inputs = Tensor::empty({batch_size, params_.seq_len}, DType::Int32, device);
  b.targets = Tensor::empty({batch_size, params_.seq_len}, DType::Int32, device);
  b.eval_targets = separate_eval_targets() ? Tensor::empty({batch_size, params_.seq_len}, DType::Int32, device)
                                           : b.targets;
  return b;
}

uint64_t Task::first_example(const Batch& out, Device device, uint32_t rank, const char* what) const {
  const int64_t L = params_.seq_len;
  auto ok = [&](const Tensor& t) {
    return t.defined() && t.device() == device && t.dtype() == DType::Int32 && t.dim() == 2 && t.size(1) == L &&
           t.is_contiguous() && t.size(0) == out.inputs.size(0);
  };
  S6_CHECK(out.inputs.defined() && ok(out.inputs) && ok(out.targets) && ok(out.eval_targets),
           "{}.{}: the batch must hold contiguous {} int32 (batch, {}) tensors (use make_batch); "
           "got inputs {}",
           name_, what, device == Device::CUDA ? "CUDA" : "CPU", L,
           out.inputs.defined() ? out.inputs.describe() : std::string("undefined"));
  const int64_t B = out.inputs.size(0);
  S6_CHECK((static_cast<uint64_t>(rank) + 1) * static_cast<uint64_t>(B) <= (uint64_t{1} << 32),
           "{}.{}: rank {} * batch {} exceeds 2^32 examples per global batch", name_, what, rank, B);
  S6_CHECK(!separate_eval_targets() || out.eval_targets.data_ptr() != out.targets.data_ptr(),
           "{}.{}: eval_targets must be its own tensor with loss_positions = all (use make_batch)", name_,
           what);
  return static_cast<uint64_t>(rank) * static_cast<uint64_t>(B);
}

void Task::sample_into(Batch& out, uint64_t seed, uint64_t k, uint32_t rank, Split split) const {
  const uint64_t first = first_example(out, Device::CPU, rank, "sample_into");
  const int64_t L = params_.seq_len, B = out.inputs.size(0);
  const bool aliased = out.eval_targets.data_ptr() == out.targets.data_ptr();
  const bool separate = separate_eval_targets();
  const uint64_t key = stream_key(seed, split);
  int32_t* in = out.inputs.data<int32_t>();
  int32_t* tgt = out.targets.data<int32_t>();
  int32_t* ev = out.eval_targets.data<int32_t>();
#pragma omp parallel for schedule(static) if (B * L >= 16384)
  for (int64_t e = 0; e < B; ++e) {
    ExampleRng rng(key, k, first + static_cast<uint64_t>(e));
    generate_split(rng, split, in + e * L, tgt + e * L, separate ? ev + e * L : nullptr);
    if (!separate && !aliased) std::copy(tgt + e * L, tgt + (e + 1) * L, ev + e * L);
  }
}

uint64_t Task::stream_key(uint64_t seed, Split split) const {
  return derive_key(seed, split, task_id(), static_cast<uint64_t>(params_.vocab),
                    static_cast<uint64_t>(params_.seq_len), static_cast<uint64_t>(params_.num_tokens));
}

void Task::sample_on_device(Batch& out, uint64_t seed, const uint64_t* batch_index, uint32_t rank,
                            Split split) const {
  const uint64_t first = first_example(out, Device::CUDA, rank, "sample_on_device");
  S6_CHECK(batch_index, "{}.sample_on_device: needs the batch index's device address", name_);
  launch_on_device({out.inputs.data<int32_t>(), out.targets.data<int32_t>(), out.eval_targets.data<int32_t>(),
                    out.inputs.size(0)},
                   stream_key(seed, split), batch_index, first);
}

Batch Task::sample(int64_t batch_size, uint64_t seed, uint64_t k, uint32_t rank, Split split) const {
  Batch b = make_batch(batch_size);
  sample_into(b, seed, k, rank, split);
  return b;
}

std::vector<Batch> Task::validation_set(uint64_t seed, int64_t num_batches, int64_t batch_size) const {
  S6_CHECK(num_batches >= 0, "{}: validation num_batches = {} must be >= 0", name_, num_batches);
  std::vector<Batch> v;
  v.reserve(static_cast<size_t>(num_batches));
  for (int64_t j = 0; j < num_batches; ++j)
    v.push_back(sample(batch_size, seed, static_cast<uint64_t>(j), 0, Split::Validation));
  return v;
}

std::unique_ptr<Task> make_task(const std::string& name, const TaskParams& params) {
  if (name == "copying") return std::make_unique<CopyingTask>(params, false);
  if (name == "selective_copying") return std::make_unique<CopyingTask>(params, true);
  if (name == "induction_heads") return std::make_unique<InductionHeadsTask>(params);
  S6_FAIL("task name = '{}' must be one of: copying, selective_copying, induction_heads", name);
}

Accuracy accuracy(const Tensor& logits, const Tensor& targets_in) {
  S6_CHECK(logits.defined() && targets_in.defined() && !targets_in.is_cuda(),
           "accuracy: needs logits (CPU or CUDA) and CPU targets");
  S6_CHECK(logits.dim() == 2 || logits.dim() == 3,
           "accuracy: logits must be (rows, vocab) or (B, L, vocab); got {}", logits.describe());
  S6_CHECK(targets_in.dtype() == DType::Int32, "accuracy: targets must be int32; got {}",
           targets_in.describe());
  S6_CHECK(
      logits.dtype() == DType::Float32 || logits.dtype() == DType::Float64 || logits.dtype() == DType::BFloat16,
      "accuracy: logits must be float32, float64 or bfloat16; got {}", logits.describe());
  const int64_t vocab = logits.size(-1), rows = logits.numel() / std::max<int64_t>(vocab, 1);
  S6_CHECK(rows == targets_in.numel() && vocab >= 1,
           "accuracy: logits {} have {} rows but targets {} have {} elements", logits.describe(), rows,
           targets_in.describe(), targets_in.numel());
  // The argmax runs where the logits are: only `rows` int32 predictions cross to the host (an LM's
  // bf16 logits are gigabytes).
  Tensor predicted = logits.argmax_last().to(Device::CPU);
  Tensor targets = targets_in.contiguous();
  const int32_t* pred = predicted.data<int32_t>();
  const int32_t* tgt = targets.data<int32_t>();
  int64_t correct = 0, total = 0, bad = -1;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = tgt[r];
    if (t == kIgnoreIndex) continue;
    if (t < 0 || t >= vocab) {
      if (bad < 0) bad = r;
      continue;
    }
    correct += pred[r] == t;
    ++total;
  }
  S6_CHECK(bad < 0, "accuracy: target {} at row {} is outside [0, {}) and is not the ignore index {}", tgt[bad],
           bad, vocab, kIgnoreIndex);
  return {correct, total};
}

}  // namespace s6::data
