// Generation: prefill, the recurrent decode loop (a CUDA graph per step on the GPU), sampling, model loading.
#include "trainer/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/philox.h"
#include "trainer/checkpoint.h"
#include "trainer/hf_model.h"
#include "trainer/resume.h"

namespace s6::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Makes a fresh stream current for generation on CUDA (a graph cannot capture the legacy default
// stream) and restores the previous one after draining it.
class GenerationStream {
 public:
  explicit GenerationStream(bool enabled) {
    if (!enabled) return;
    previous_ = cuda::current_stream();
    cuda::synchronize();
    stream_ = cuda::create_stream();
    cuda::set_current_stream(stream_);
  }
  ~GenerationStream() {
    if (!stream_) return;
    try {
      cuda::synchronize();
    } catch (...) {  // a destructor must not throw; the caller's own error is reported
    }
    cuda::set_current_stream(previous_);
    cuda::destroy_stream(stream_);
  }
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

 private:
  void* previous_ = nullptr;
  void* stream_ = nullptr;
};

// One decode step from device-resident ids: the argmax per row (greedy) or the first `vocab`
// logits as float32 (sampling), in buffers a graph replays.
class DecodeStep {
 public:
  DecodeStep(const MambaLM& model, InferenceState& state, int64_t batch, int64_t vocab, bool greedy, bool graph)
      : model_(model), state_(state), vocab_(vocab), greedy_(greedy), use_graph_(graph) {
    ids_ = Tensor::empty({batch}, DType::Int32, model.device());  // before any capture: the host fills it
  }
  ~DecodeStep() {
    if (graph_) cuda::destroy_graph(graph_);
  }
  DecodeStep(const DecodeStep&) = delete;
  DecodeStep& operator=(const DecodeStep&) = delete;

  // Feeds one token per row; returns (batch) int32 tokens or (batch, vocab) float32 logits, on the host.
  Tensor run(const std::vector<int32_t>& ids) {
    ids_.copy_(Tensor::from_vector<int32_t>(ids, {static_cast<int64_t>(ids.size())}));
    if (!use_graph_ || calls_++ == 0) {
      out_ = compute();  // the first step eagerly: handles and workspaces exist before a capture
    } else {
      if (!graph_) capture();
      cuda::replay(graph_);
    }
    return out_.to(Device::CPU);
  }
  bool used_graph() const { return graph_ != nullptr; }

 private:
  Tensor compute() {
    Tensor first = model_.step(ids_, state_).narrow(1, 0, vocab_);
    return greedy_ ? first.argmax_last() : first.to(DType::Float32).contiguous();
  }
  void capture() {
    cuda::begin_capture();
    try {
      out_ = compute();
      graph_ = cuda::end_capture();
    } catch (...) {
      cuda::abort_capture();
      throw;
    }
  }

  const MambaLM& model_;
  InferenceState& state_;
  int64_t vocab_;
  bool greedy_, use_graph_;
  int64_t calls_ = 0;
  Tensor ids_, out_;
  cuda::CapturedGraph* graph_ = nullptr;
};

// Picks one token per row from host logits (batch, vocab) or takes the host argmax (batch).
std::vector<int32_t> pick(const Tensor& host, const SamplingOptions& s, int64_t vocab, int64_t position) {
  const int64_t batch = host.size(0);
  std::vector<int32_t> out(static_cast<size_t>(batch));
  if (host.dtype() == DType::Int32) {
    const int32_t* p = host.data<int32_t>();
    std::copy(p, p + batch, out.begin());
    return out;
  }
  // Held in a local: a pointer into contiguous()'s temporary copy would dangle once the
  // statement ends (the prefill's logits are a strided narrow of the padded vocabulary).
  const Tensor rows = host.contiguous();
  const float* p = rows.data<float>();
  for (int64_t r = 0; r < batch; ++r)
    out[r] = sample_from_logits(
        p + r * vocab, vocab, s,
        s.greedy() ? 0.0 : sampling_uniform(s.seed, r, static_cast<uint64_t>(position)));
  return out;
}

}  // namespace

double sampling_uniform(uint64_t seed, uint64_t row, uint64_t position) {
  const PhiloxBlock key = philox4x32(seed, 0x47454e4552415445ull /* "GENERATE" */, 0);
  const PhiloxBlock b = philox4x32(key.v[0] | (static_cast<uint64_t>(key.v[1]) << 32), row, position);
  return uint_to_unit_double(b.v[0], b.v[1]);
}

int32_t sample_from_logits(const float* logits, int64_t vocab, const SamplingOptions& o, double u) {
  S6_CHECK(vocab >= 1, "sample_from_logits: vocab = {} must be >= 1", vocab);
  if (o.greedy()) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    return static_cast<int32_t>(best);
  }
  // Candidates by decreasing logit (lower id first on ties); only the top_k when that is set.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, vocab) : vocab;
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (k < vocab || o.top_p < 1.0) std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
  float top = logits[order[0]];
  for (int64_t i = 0; i < k; ++i) top = std::max(top, logits[order[i]]);
  std::vector<double> weight(static_cast<size_t>(k));
  double total = 0;
  for (int64_t i = 0; i < k; ++i) {
    const float x = logits[order[i]];
    weight[i] = std::isfinite(x) ? std::exp((static_cast<double>(x) - top) / o.temperature) : 0.0;
    total += weight[i];
  }
  int64_t n = k;
  if (o.top_p < 1.0) {  // the smallest prefix whose probability reaches top_p
    double mass = 0;
    for (int64_t i = 0; i < k; ++i) {
      mass += weight[i];
      if (mass >= o.top_p * total) {
        n = i + 1;
        break;
      }
    }
    total = 0;
    for (int64_t i = 0; i < n; ++i) total += weight[i];
  }
  const double target = u * total;
  double cumulative = 0;
  for (int64_t i = 0; i < n; ++i) {
    cumulative += weight[i];
    if (target < cumulative) return order[i];
  }
  for (int64_t i = n - 1; i >= 0; --i)  // rounding left u * total at the very end
    if (weight[i] > 0) return order[i];
  return order[0];
}

GenerationResult generate(const MambaLM& model, int64_t vocab, const std::vector<std::vector<int32_t>>& prompts,
                          const GenerationOptions& options) {
  S6_CHECK(!prompts.empty(), "generate: needs at least one prompt");
  S6_CHECK(vocab >= 1 && vocab <= model.config().padded_vocab(), "generate: vocab {} must be in [1, {}]", vocab,
           model.config().padded_vocab());
  S6_CHECK(options.max_new_tokens >= 1, "generate: max_new_tokens = {} must be >= 1", options.max_new_tokens);
  const int64_t batch = static_cast<int64_t>(prompts.size());
  size_t shortest = prompts[0].size(), longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    S6_CHECK(!prompts[i].empty(), "generate: prompt {} is empty (a prompt needs at least one token)", i);
    for (int32_t t : prompts[i])
      S6_CHECK(t >= 0 && t < vocab, "generate: prompt {} holds token {} outside the vocabulary [0, {})", i, t,
               vocab);
    shortest = std::min(shortest, prompts[i].size());
    longest = std::max(longest, prompts[i].size());
  }
  const bool cuda = model.device() == Device::CUDA;
  autograd::NoGradGuard no_grad;
  GenerationStream stream(cuda);
  GenerationResult result;
  result.tokens.assign(prompts.size(), {});

  // Prefill: the common prefix of every prompt through the parallel scan, which hands its final
  // conv and SSM states to the recurrent step.
  auto t0 = Clock::now();
  InferenceState state = model.new_state(batch);
  const int64_t prefix = static_cast<int64_t>(shortest);
  std::vector<int32_t> ids(static_cast<size_t>(batch * prefix));
  for (int64_t r = 0; r < batch; ++r)
    std::copy(prompts[r].begin(), prompts[r].begin() + prefix, ids.begin() + r * prefix);
  Tensor last = model.prefill(Tensor::from_vector<int32_t>(ids, {batch, prefix}).to(model.device()), state)
                    .narrow(1, 0, vocab);
  const SamplingOptions& s = options.sampling;
  Tensor host = (s.greedy() ? last.argmax_last() : last.to(DType::Float32).contiguous()).to(Device::CPU);
  if (cuda) cuda::synchronize();
  result.prefill_seconds = seconds_since(t0);

  // Decode: position p's token is the prompt's where the prompt reaches p, else the model's pick.
  auto t1 = Clock::now();
  DecodeStep step(model, state, batch, vocab, s.greedy(), cuda && options.cuda_graph);
  const int64_t end = static_cast<int64_t>(longest) + options.max_new_tokens;
  for (int64_t p = prefix;; ++p) {
    std::vector<int32_t> picked = pick(host, s, vocab, static_cast<uint64_t>(p)),
                         next(static_cast<size_t>(batch));
    bool more = false;
    for (int64_t r = 0; r < batch; ++r) {
      const auto& prompt = prompts[r];
      auto& out = result.tokens[r];
      if (p < static_cast<int64_t>(prompt.size())) {
        next[r] = prompt[p];
      } else {
        next[r] = picked[r];
        if (static_cast<int64_t>(out.size()) < options.max_new_tokens) {
          out.push_back(picked[r]);
          if (options.on_token) options.on_token(r, picked[r]);
        }
      }
      more = more || static_cast<int64_t>(out.size()) < options.max_new_tokens;
    }
    if (!more || p + 1 >= end) break;
    host = step.run(next);
    ++result.decode_steps;
  }
  if (cuda) cuda::synchronize();
  result.decode_seconds = seconds_since(t1);
  result.used_graph = step.used_graph();
  return result;
}

LoadedModel load_generation_model(const std::string& where, Device device, const std::string& precision) {
  LoadedModel out;
  // On the CPU, fp32 unless asked: the CPU's bf16 path is an oracle, not a fast path.
  auto compute = [&](const std::string& run_precision) {
    const std::string p = !precision.empty() ? precision : device == Device::CUDA ? run_precision : "fp32";
    return p == "bf16" ? DType::BFloat16 : DType::Float32;
  };
  if (is_hf_folder(where)) {  // a Hugging Face folder: token ids in and out, no run config
    out.checkpoint = where;
    out.model = std::make_unique<MambaLM>(load_model_from_hf_folder(where, device, compute("fp32")));
    out.config.model = out.model->config();
    return out;
  }
  out.checkpoint = resolve_checkpoint(where);
  CheckpointContents contents = read_checkpoint(out.checkpoint, /*model_only=*/true);
  try {
    out.config = load_config_text(contents.meta.config_yaml, out.checkpoint + " (its stored config)", {});
  } catch (const ConfigError& e) {
    throw CheckpointError(fmt::format("{}: the stored config does not load: {}", out.checkpoint, e.what()));
  }
  out.step = contents.meta.step;
  out.model = std::make_unique<MambaLM>(out.config.model, out.config.seed, DType::Float32, device,
                                        compute(out.config.train.precision));
  restore(contents, *out.model, nullptr);
  return out;
}

}  // namespace s6::trainer
