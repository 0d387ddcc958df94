// Text generation with a trained MambaLM: prefill with the parallel scan, then one recurrent step per
// token (constant memory per token), greedy or sampled (temperature, top-k, top-p), on CPU or CUDA
// (the decode step replayed as one CUDA graph).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::trainer {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens (0 = all)
  double top_p = 1.0;        // then the smallest set whose probability reaches top_p (1 = all)
  uint64_t seed = 1;
  bool greedy() const { return temperature <= 0; }
};

// The uniform in [0, 1) that picks token `position` of sequence `row`: a Philox counter of
// (seed, row, position), so a sample depends on neither the batch it ran in nor the device.
double sampling_uniform(uint64_t seed, uint64_t row, uint64_t position);

// One token from a row of `vocab` logits with uniform u: greedy takes the first maximum; else the
// softmax of logits / temperature over the top_k largest (ties broken by lower id), cut to the
// smallest prefix (by decreasing probability) whose mass reaches top_p, renormalised; u picks by
// the cumulative sum.
int32_t sample_from_logits(const float* logits, int64_t vocab, const SamplingOptions& options, double u);

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  bool cuda_graph = true;  // CUDA: replay the decode step as one graph (from the second step on)
  // Called as each new token is decided: (row, token).
  std::function<void(int64_t, int32_t)> on_token;
};

struct GenerationResult {
  std::vector<std::vector<int32_t>> tokens;  // per prompt: its max_new_tokens new tokens
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_steps = 0;  // recurrent steps taken (one per position after the prefill)
  bool used_graph = false;
};

// Prompts may differ in length: the common prefix length is prefilled with the parallel scan for
// the whole batch; the rest of a longer prompt is fed through the recurrent step, token by token,
// while the shorter ones already generate. Every prompt gets max_new_tokens new tokens; sampling
// and the argmax cover the first `vocab` logits (the model's padded vocabulary is not sampled).
GenerationResult generate(const MambaLM& model, int64_t vocab, const std::vector<std::vector<int32_t>>& prompts,
                          const GenerationOptions& options);

// A trained model to generate with.
struct LoadedModel {
  TrainConfig config;  // the run's resolved config, as the checkpoint stored it
  std::string checkpoint;
  int64_t step = 0;
  std::unique_ptr<MambaLM> model;
};
// A checkpoint file, a run directory (its newest checkpoint) or a Hugging Face folder (no run config:
// prompts are token ids). Throws CheckpointError for a missing or unreadable checkpoint.
// `precision`: fp32 | bf16 | "" (the run's).
LoadedModel load_generation_model(const std::string& model_source, Device device, const std::string& precision);

}  // namespace s6::trainer
