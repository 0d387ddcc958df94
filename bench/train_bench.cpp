// Training-step mode of `bench`: for each TARGETS.md section-2 config, the median wall time of one
// full step (forward, loss, backward, norm, clip, AdamW) eagerly and as a replayed CUDA graph,
// tokens/s and the allocator's peak, beside the reference (PyTorch + mamba_ssm on an H100).
#include "bench/train_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "layers/ops.h"
#include "trainer/captured_step.h"
#include "trainer/evaluate.h"
#include "trainer/optimizer.h"

namespace {

using namespace s6;
using namespace s6::trainer;

struct StepCase {
  const char* name;
  const char* task;
  int64_t d_model, n_layer, vocab, batch, length;
  int steps;
  double ref_ms, ref_gib;  // TARGETS.md section 2
  const char* ref_note;
};

TrainConfig config_for(const StepCase& s) {
  TrainConfig c;
  c.device = "cuda";
  c.model.d_model = s.d_model;
  c.model.n_layer = s.n_layer;
  c.model.vocab_size = s.vocab;
  c.task.name = s.task;
  c.task.vocab_size = s.vocab;
  c.task.seq_len = s.length;
  c.task.num_tokens = std::string(s.task) == "selective_copying" ? 16 : 1;
  // The reference scores every position; our induction task can too (copying scores its answers).
  if (std::string(s.task) == "induction_heads") c.task.loss_positions = "all";
  c.optim.lr = 1e-3;
  c.optim.weight_decay = 0.0;
  c.train.batch_size = s.batch;
  return c;
}

// Median wall time (ms) of `step` over n calls after 3 warm-up calls; each call ends synchronized.
double median_ms(int n, const std::function<void()>& step) {
  for (int i = 0; i < 3; ++i) step();
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Measured {
  double ms = 0, peak_gib = 0;
};

Measured measure(const StepCase& s, bool graph, int steps) {
  TrainConfig c = config_for(s);
  MambaLM model(c.model, /*seed=*/1, DType::Float32, Device::CUDA);
  AdamW optimizer(model.parameters(), c.optim);
  auto task = make_configured_task(c, s.length);
  data::Batch batch = task->make_batch(s.batch);
  task->sample_into(batch, 1, 0, 0);
  const int64_t vocab = model.config().padded_vocab();
  cuda::synchronize();
  cuda::empty_cache();
  cuda::reset_peak_stats();
  Measured m;
  if (graph) {
    std::unique_ptr<CapturedStep> captured = make_captured_step(model, optimizer, c);
    m.ms = median_ms(steps, [&] { captured->run(batch, c.optim.lr); });
  } else {
    m.ms = median_ms(steps, [&] {
      Tensor inputs = batch.inputs.to(Device::CUDA);
      Tensor targets = batch.targets.view({batch.targets.numel()}).to(Device::CUDA);
      Tensor logits = model.forward(inputs);
      Tensor loss = cross_entropy(reshape(logits, {targets.numel(), vocab}), targets);
      autograd::backward(loss);
      (void)loss.item();
      GradientNorm gn = optimizer.gradient_norm();
      optimizer.step(c.optim.lr, clip_scale(gn.norm, c.optim.grad_clip));
      optimizer.zero_grad();
      cuda::synchronize();
    });
  }
  m.peak_gib = static_cast<double>(cuda::allocator_stats().peak_allocated_bytes) / (1 << 30);
  return m;
}

}  // namespace

void run_train_bench() {
  const std::vector<StepCase> cases = {
      {"induction heads", "induction_heads", 64, 2, 16, 8, 256, 200, 9.46, 0.08, "fp32"},
      {"selective copying", "selective_copying", 64, 2, 16, 64, 4096, 20, 17.2, 2.35, "fp32"},
      {"LM 768x24 (ours fp32)", "induction_heads", 768, 24, 50280, 8, 2048, 5, 128.7, 16.7,
       "bf16 autocast"},
  };
  void* previous = cuda::current_stream();
  void* stream = cuda::create_stream();  // a capturable stream for the graph mode
  cuda::set_current_stream(stream);
  fmt::print("\ntraining step (forward, loss on all positions, backward, norm, clip, AdamW); "
             "median wall ms per step, each step synchronized\n");
  fmt::print("| config | mode | ms/step | tokens/s | peak GiB | ref ms/step (ref dtype) | ref peak GiB | ref/ours |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  for (const StepCase& s : cases) {
    for (bool graph : {false, true}) {
      Measured m = measure(s, graph, s.steps);
      const double tokens = static_cast<double>(s.batch * s.length);
      fmt::print("| {} (batch {}, L {}) | {} | {:.3f} | {:.3g} | {:.2f} | {:.2f} ({}) | {:.2f} | {:.2f}x |\n",
                 s.name, s.batch, s.length, graph ? "cuda graph" : "eager", m.ms, tokens / (m.ms * 1e-3),
                 m.peak_gib, s.ref_ms, s.ref_note, s.ref_gib, s.ref_ms / m.ms);
      std::fflush(stdout);
    }
  }
  cuda::set_current_stream(previous);
  cuda::destroy_stream(stream);
}
