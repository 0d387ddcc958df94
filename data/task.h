// Tasks (docs/model.md 5): the Batch format, task parameters, the Task interface, make_task, accuracy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/rng.h"

namespace s6::data {

constexpr int32_t kIgnoreIndex = -100;  // target value of positions that carry no loss

// One batch, all CPU int32 tensors of shape (batch, length):
//   inputs       — the token ids the model reads;
//   targets      — the next-token target at each position scored by the LOSS, kIgnoreIndex elsewhere;
//   eval_targets — the positions scored by ACCURACY (argmax == target), kIgnoreIndex elsewhere.
// Which positions are scored is documented per task (data/copying.h, data/induction.h). When loss
// and accuracy use the same positions (copying tasks; induction heads with loss_positions=last),
// eval_targets is the same tensor as targets (shared storage).
struct Batch {
  Tensor inputs;
  Tensor targets;
  Tensor eval_targets;
  int64_t batch_size() const { return inputs.defined() ? inputs.size(0) : 0; }
  int64_t length() const { return inputs.defined() ? inputs.size(1) : 0; }
};

// The raw pointers of a CUDA Batch, as the device generators take them (eval_targets equal to
// targets when the task scores the loss's positions).
struct DeviceBatch {
  int32_t* inputs = nullptr;
  int32_t* targets = nullptr;
  int32_t* eval_targets = nullptr;
  int64_t batch_size = 0;
};

// Which positions the LOSS covers (accuracy always uses the task's answer positions).
enum class LossPositions { Last, All };
LossPositions parse_loss_positions(const std::string& s);  // "last" | "all"
const char* loss_positions_name(LossPositions p);

struct TaskParams {
  int64_t vocab = 16;       // total vocabulary, special tokens included
  int64_t seq_len = 4096;   // model input length (copying: TOTAL length L_noise + 2M)
  int64_t num_tokens = 16;  // copying tasks: M, the tokens to memorize (ignored by induction heads)
  LossPositions loss_positions = LossPositions::Last;  // induction heads only; copying needs Last
};

// A generator. Batch k of rank r is a pure function of (seed, split, k, r, batch size B): it holds
// examples r*B .. r*B+B-1 of global batch k, each drawn from its own Philox counter range. So ranks
// get disjoint examples, the concatenation over ranks does not depend on the number of ranks, and
// results do not depend on the OpenMP thread count. Split::Validation uses an independent key.
class Task {
 public:
  virtual ~Task() = default;
  const std::string& name() const { return name_; }
  const TaskParams& params() const { return params_; }
  int64_t vocab() const { return params_.vocab; }
  int64_t seq_len() const { return params_.seq_len; }

  // Allocates a batch on `device` (eval_targets aliased to targets where the task scores the same
  // positions).
  Batch make_batch(int64_t batch_size, Device device = Device::CPU) const;
  // Fills a batch from make_batch (or of the same shapes) in place: no allocation.
  void sample_into(Batch& out, uint64_t seed, uint64_t k, uint32_t rank = 0, Split split = Split::Train) const;
  Batch sample(int64_t batch_size, uint64_t seed, uint64_t k, uint32_t rank = 0,
               Split split = Split::Train) const;
  // Fixed validation set: batch j = sample(batch_size, seed, j, 0, Split::Validation).
  std::vector<Batch> validation_set(uint64_t seed, int64_t num_batches, int64_t batch_size) const;

  // The same bits as sample_into, written by kernels on the current CUDA stream into a batch from
  // make_batch(batch_size, Device::CUDA). The batch index is read from device memory
  // (*batch_index) when the kernels run, so a captured CUDA graph can replay the generation for
  // every step. Throws in a build without CUDA.
  void sample_on_device(Batch& out, uint64_t seed, const uint64_t* batch_index, uint32_t rank = 0,
                        Split split = Split::Train) const;

  // True when accuracy uses other positions than the loss (eval_targets is then its own tensor).
  virtual bool separate_eval_targets() const { return false; }
  // False for tasks read from files (data/text_task.h): they have no device generator, so a CUDA
  // run samples their batches on the host and copies them to the device.
  virtual bool samples_on_device() const { return true; }

 protected:
  Task(std::string name, const TaskParams& params) : name_(std::move(name)), params_(params) {}
  virtual uint64_t task_id() const = 0;
  // The Philox key of every example stream for (seed, split).
  uint64_t stream_key(uint64_t seed, Split split) const;
  // Checks `out` for sample_into / sample_on_device (`what`) on `device`; returns rank's first
  // example of the global batch.
  uint64_t first_example(const Batch& out, Device device, uint32_t rank, const char* what) const;
  // Launches the device generator for examples first_example .. + out.batch_size - 1.
  virtual void launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                                uint64_t first_example) const = 0;
  // Writes one example: inputs and targets rows of length seq_len; eval is null unless
  // separate_eval_targets().
  virtual void generate(ExampleRng& rng, int32_t* inputs, int32_t* targets, int32_t* eval) const = 0;
  // The same for one split: synthetic tasks tell the splits apart by their key alone, file tasks
  // also read other files for validation.
  virtual void generate_split(ExampleRng& rng, Split /*split*/, int32_t* inputs, int32_t* targets,
                              int32_t* eval) const {
    generate(rng, inputs, targets, eval);
  }

  std::string name_;
  TaskParams params_;
};

// name: "copying" | "selective_copying" | "induction_heads" (file tasks: data/text_task.h). Throws s6::Error
// naming the parameter and its valid range when params are invalid.
std::unique_ptr<Task> make_task(const std::string& name, const TaskParams& params);

// Accuracy counts over the non-ignored positions of targets: logits (rows, vocab) or (B, L, vocab),
// float32 or float64 on the CPU, with rows == targets.numel(); targets int32 (B, L). A row is correct
// when its first maximal logit is at the target.
struct Accuracy {
  int64_t correct = 0;
  int64_t total = 0;
  double fraction() const { return total ? static_cast<double>(correct) / total : 0.0; }
  Accuracy& operator+=(const Accuracy& o) {
    correct += o.correct;
    total += o.total;
    return *this;
  }
};
Accuracy accuracy(const Tensor& logits, const Tensor& targets);

}  // namespace s6::data
