// Validation: task batches from the Validation split (generated on the device on CUDA), no tape,
// token budget per forward.
#include "trainer/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "autograd/tape.h"
#include "data/task.h"
#include "data/text_task.h"
#include "layers/ops.h"
#include "trainer/configured_task.h"
#include "trainer/data_parallel.h"
#include "trainer/signals.h"

namespace s6::trainer {

namespace {
// Tokens per forward pass; long evaluations shrink their batch to stay under it.
int64_t token_budget(Device device) { return device == Device::CUDA ? (int64_t{1} << 22) : (int64_t{1} << 16); }
}  // namespace

std::string language_model_figures(const EvalResult& r) {
  std::string out;
  if (std::isfinite(r.perplexity)) out += fmt::format(", perplexity {:.3f}", r.perplexity);
  if (std::isfinite(r.bits_per_byte)) out += fmt::format(", {:.4f} bits/byte", r.bits_per_byte);
  return out;
}

EvalBatch eval_batch(const data::Task& task, int64_t batch_size, uint64_t seed, uint64_t j, Device device) {
  const int64_t length = task.seq_len();
  if (device != Device::CUDA || !task.samples_on_device()) {
    data::Batch batch = task.sample(batch_size, seed, j, 0, data::Split::Validation);
    return {batch.inputs.to(device), batch.targets.view({batch_size * length}).to(device), batch.targets,
            batch.eval_targets};
  }
  // Generated where the model is; only the targets the host counts and scores come back.
  data::Batch batch = task.make_batch(batch_size, device);
  const Tensor index = Tensor::from_vector<int64_t>({static_cast<int64_t>(j)}, {1}, device);
  task.sample_on_device(batch, seed, reinterpret_cast<const uint64_t*>(index.data<int64_t>()), 0,
                        data::Split::Validation);
  Tensor host_targets = batch.targets.to(Device::CPU);
  return {batch.inputs, batch.targets.view({batch_size * length}), host_targets,
          task.separate_eval_targets() ? batch.eval_targets.to(Device::CPU) : host_targets};
}

EvalResult evaluate(const MambaLM& model, const TrainConfig& config, int64_t length, DataParallel* dp) {
  std::unique_ptr<data::Task> task = make_configured_task(config, length);

  autograd::NoGradGuard no_grad;
  const int64_t per_forward = std::clamp<int64_t>(token_budget(model.device()) / length, 1,
                                                  config.eval.batch_size);
  EvalResult result;
  double loss_sum = 0;
  int64_t loss_count = 0;
  data::Accuracy acc;
  const int64_t rank = dp ? dp->rank() : 0, world = dp ? dp->world_size() : 1;
  for (int64_t start = 0, j = 0; start < config.eval.num_examples; start += per_forward, ++j) {
    if (j % world != rank) continue;  // forward j belongs to rank j mod world
    if (stop_requested()) {           // no collective inside the loop, so a rank may leave it early
      result.interrupted = true;
      break;
    }
    int64_t b = std::min(per_forward, config.eval.num_examples - start);
    const EvalBatch batch = eval_batch(*task, b, config.seed, static_cast<uint64_t>(j), model.device());
    Tensor logits = model.forward(batch.inputs);
    const int64_t vocab = logits.size(2);
    Tensor flat = logits.view({b * length, vocab});
    int64_t counted = 0;
    for (int32_t t : batch.targets.to_vector<int32_t>()) counted += t != data::kIgnoreIndex;
    loss_sum += cross_entropy(flat, batch.device_targets).item() * static_cast<double>(counted);
    loss_count += counted;
    acc += data::accuracy(flat, batch.eval_targets);  // argmax on the device
    result.examples += b;
  }
  if (dp) {
    std::vector<double> sums{loss_sum,
                             static_cast<double>(loss_count),
                             static_cast<double>(acc.correct),
                             static_cast<double>(acc.total),
                             static_cast<double>(result.examples),
                             result.interrupted ? 1.0 : 0.0};
    dp->sum(sums);
    loss_sum = sums[0];
    loss_count = static_cast<int64_t>(sums[1]);
    acc.correct = static_cast<int64_t>(sums[2]);
    acc.total = static_cast<int64_t>(sums[3]);
    result.examples = static_cast<int64_t>(sums[4]);
    result.interrupted = sums[5] > 0;
  }
  result.loss = loss_count ? loss_sum / static_cast<double>(loss_count) : 0.0;
  result.accuracy = acc.fraction();
  if (data::is_text_task(config.task.name)) {
    result.perplexity = std::exp(result.loss);
    if (config.task.name == "bytes") result.bits_per_byte = result.loss / std::log(2.0);
  }
  return result;
}

}  // namespace s6::trainer
