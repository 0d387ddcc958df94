// Training-step mode of `bench`: for each docs/performance.md section-2 config, the median wall time of one
// full step (forward, loss, backward, norm, clip, AdamW) eagerly and as a replayed CUDA graph,
// tokens/s, model FLOP utilisation and the allocator's peak, beside the reference (PyTorch 2.11 +
// the official mamba_ssm kernels, eager and with the whole step in one CUDA graph, measured on an
// H200 on 2026-12-04; docs/performance.md). The ratio is against the graph column: the figure a
// PyTorch user who cares about speed gets.
#include "bench/train_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "core/cuda_runtime.h"
#include "trainer/configured_task.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace {

using namespace s6;
using namespace s6::trainer;

struct StepCase {
  const char* name;
  const char* task;
  int64_t d_model, n_layer, vocab, batch, length;
  const char* precision;  // train.precision: fp32 | bf16
  int steps;
  double ref_eager_ms, ref_graph_ms, ref_gib;  // docs/performance.md, reference on an H200
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
  c.train.precision = s.precision;
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
  c.train.cuda_graph = graph ? "on" : "off";
  MambaLM model(c.model, /*seed=*/1, DType::Float32, Device::CUDA, compute_dtype(c));
  AdamW optimizer(model.parameters(), c.optim);
  auto task = make_configured_task(c, s.length);
  cuda::synchronize();
  cuda::empty_cache();
  cuda::reset_peak_stats();
  // The trainer's step: batch k generated on the device, forward, loss, backward, norm, clip,
  // AdamW; with the graph, the warm-up's second call captures it and the timed calls replay it.
  TrainStep step(model, optimizer, c, {task.get(), s.batch, /*seed=*/1, /*rank=*/0});
  uint64_t k = 0;
  Measured m;
  m.ms = median_ms(steps, [&] {
    step.run(k++, c.optim.lr);
    cuda::synchronize();
  });
  m.peak_gib = static_cast<double>(cuda::allocator_stats().peak_allocated_bytes) / (1 << 30);
  return m;
}

// Model FLOPs per token of one training step: 6 x the weights of every matrix product a token
// passes through (in, x, dt and out projections per layer and the head; 2 FLOPs per weight
// forward, 4 backward). The scan, conv, norms and loss (about 3% more at the LM size) are left out.
double flops_per_token(const MambaConfig& m) {
  const double din = static_cast<double>(m.d_inner()), d = static_cast<double>(m.d_model);
  const double r = static_cast<double>(m.resolved_dt_rank()), n = static_cast<double>(m.d_state);
  const double per_layer = d * 2 * din + din * (r + 2 * n) + r * din + din * d;
  return 6.0 * (static_cast<double>(m.n_layer) * per_layer + d * static_cast<double>(m.padded_vocab()));
}

// Dense bf16 tensor-core peak of the H100 SXM and H200 (the same chip): the MFU denominator for
// every row, fp32 included, so the rows compare.
constexpr double kPeakFlops = 989.4e12;

}  // namespace

void run_train_bench(const std::string& only) {
  const std::vector<StepCase> cases = {
      {"induction heads", "induction_heads", 64, 2, 16, 8, 256, "fp32", 200, 8.98, 0.489, 0.21, "fp32"},
      {"selective copying", "selective_copying", 64, 2, 16, 64, 4096, "fp32", 20, 20.73, 20.16, 2.49, "fp32"},
      {"selective copying", "selective_copying", 64, 2, 16, 64, 4096, "bf16", 20, 14.52, 13.99, 1.54,
       "bf16 autocast"},
      {"LM 768x24", "induction_heads", 768, 24, 50280, 8, 2048, "fp32", 5, 110.0, 95.0, 18.5, "bf16 autocast"},
      {"LM 768x24", "induction_heads", 768, 24, 50280, 8, 2048, "bf16", 10, 110.0, 95.0, 18.5, "bf16 autocast"},
  };
  void* previous = cuda::current_stream();
  void* stream = cuda::create_stream();  // a capturable stream for the graph mode
  cuda::set_current_stream(stream);
  fmt::print(
      "\ntraining step (forward, loss on all positions, backward, norm, clip, AdamW); "
      "median wall ms per step, each step synchronized; MFU = 6 x matmul weights per token x "
      "tokens/s / {:.1f} TFLOP/s (dense bf16 peak)\n",
      kPeakFlops / 1e12);
  fmt::print(
      "| config | precision | mode | ms/step | tokens/s | MFU | peak GiB | ref dtype | ref eager ms | ref graph ms "
      "| ref peak GiB | ref graph/ours |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const StepCase& s : cases) {
    if (!only.empty() && std::string(s.name).find(only) == std::string::npos) continue;
    for (bool graph : {false, true}) {
      Measured m = measure(s, graph, s.steps);
      const double tokens = static_cast<double>(s.batch * s.length);
      const double tokens_per_s = tokens / (m.ms * 1e-3);
      const double mfu = flops_per_token(config_for(s).model) * tokens_per_s / kPeakFlops;
      fmt::print(
          "| {} (batch {}, L {}) | {} | {} | {:.3f} | {:.3g} | {:.1f}% | {:.2f} | {} | {:.2f} | {:.3f} | {:.2f} | "
          "{:.2f}x |\n",
          s.name, s.batch, s.length, s.precision, graph ? "cuda graph" : "eager", m.ms, tokens_per_s,
          100.0 * mfu, m.peak_gib, s.ref_note, s.ref_eager_ms, s.ref_graph_ms, s.ref_gib, s.ref_graph_ms / m.ms);
      std::fflush(stdout);
    }
  }
  cuda::set_current_stream(previous);
  cuda::destroy_stream(stream);
}
