// `generate`: loads a model (checkpoint, run dir or Hugging Face folder) and continues prompts with the
// recurrent step, streaming text (bytes task) or token ids; --bench times random prompts instead.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/exit_codes.h"
#include "trainer/exit_report.h"
#include "trainer/generation.h"
#include "trainer/run_start.h"
#include "trainer/trainer.h"

namespace {

using namespace s6;
using namespace s6::trainer;

const char* kUsage =
    "usage: generate (--checkpoint PATH_OR_RUN_DIR_OR_HF_FOLDER | --config FILE) [prompts] [options]\n"
    "  --checkpoint P     a checkpoint file, a run directory (its newest checkpoint), or a Hugging Face\n"
    "                     folder (config.json + model.safetensors; prompts are then token ids)\n"
    "  --config FILE      a randomly initialised model of that config instead (for --bench)\n"
    "prompts (repeat for a batch; text in the bytes task, token ids otherwise):\n"
    "  --prompt TEXT      one prompt\n"
    "  --prompt-file F    one prompt per line\n"
    "  --ids \"1 2 3\"      one prompt as token ids (any task; commas or spaces)\n"
    "options:\n"
    "  --max-new-tokens N (64)   --temperature T (1.0; 0 = greedy)   --top-k K (0 = all)\n"
    "  --top-p P (1.0)           --seed S (1)                        --device auto|cpu|cuda\n"
    "  --precision fp32|bf16 (the run's on CUDA, fp32 on the CPU)    --no-graph (CUDA: eager decode)\n"
    "  --quiet            print no text, only the timing line\n"
    "  --bench            time generation on --batch B (1) random prompts of --prompt-len L (2048)\n"
    "                     tokens, greedy unless --temperature is given, after one untimed warm-up\n"
    "                     run; prints one JSON line (scripts/bench_generate.py compares with HF)\n";

struct Cli {
  std::string checkpoint, config;
  std::vector<std::string> prompts, prompt_files, ids;
  GenerationOptions gen;
  bool temperature_set = false;
  std::string device = "auto", precision;
  bool no_graph = false, quiet = false, bench = false;
  int64_t batch = 1, prompt_len = 2048;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo) {
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || x < lo)
    throw UsageError(fmt::format("{} expects an integer >= {}, got '{}'", flag, lo, v));
  return x;
}
double to_double(const std::string& flag, const std::string& v, double lo, double hi) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !(x >= lo && x <= hi))
    throw UsageError(fmt::format("{} expects a number in [{}, {}], got '{}'", flag, lo, hi, v));
  return x;
}

Cli parse(int argc, char** argv) {
  Cli c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", a));
      return argv[++i];
    };
    if (a == "--checkpoint") c.checkpoint = value();
    else if (a == "--config") c.config = value();
    else if (a == "--prompt") c.prompts.push_back(value());
    else if (a == "--prompt-file") c.prompt_files.push_back(value());
    else if (a == "--ids") c.ids.push_back(value());
    else if (a == "--max-new-tokens") c.gen.max_new_tokens = to_int(a, value(), 1);
    else if (a == "--temperature")
      c.gen.sampling.temperature = to_double(a, value(), 0, 1e6), c.temperature_set = true;
    else if (a == "--top-k") c.gen.sampling.top_k = to_int(a, value(), 0);
    else if (a == "--top-p") c.gen.sampling.top_p = to_double(a, value(), 1e-9, 1);
    else if (a == "--seed") c.gen.sampling.seed = static_cast<uint64_t>(to_int(a, value(), 0));
    else if (a == "--device") c.device = value();
    else if (a == "--precision") c.precision = value();
    else if (a == "--no-graph") c.no_graph = true;
    else if (a == "--quiet") c.quiet = true;
    else if (a == "--bench") c.bench = true;
    else if (a == "--batch") c.batch = to_int(a, value(), 1);
    else if (a == "--prompt-len") c.prompt_len = to_int(a, value(), 1);
    else throw UsageError(fmt::format("unknown argument '{}'", a));
  }
  if (c.checkpoint.empty() == c.config.empty())
    throw UsageError("give exactly one of --checkpoint and --config");
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda")
    throw UsageError(fmt::format("--device expects auto, cpu or cuda, got '{}'", c.device));
  if (!c.precision.empty() && c.precision != "fp32" && c.precision != "bf16")
    throw UsageError(fmt::format("--precision expects fp32 or bf16, got '{}'", c.precision));
  if (c.bench && !c.temperature_set) c.gen.sampling.temperature = 0;
  if (!c.bench && c.prompts.empty() && c.prompt_files.empty() && c.ids.empty())
    throw UsageError("give a prompt: --prompt, --prompt-file or --ids (or --bench)");
  c.gen.cuda_graph = !c.no_graph;
  return c;
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& what) {
  std::string s = text;
  for (char& ch : s)
    if (ch == ',') ch = ' ';
  std::istringstream in(s);
  std::vector<int32_t> out;
  std::string word;
  while (in >> word) out.push_back(static_cast<int32_t>(to_int(what, word, 0)));
  if (out.empty()) throw UsageError(fmt::format("{}: '{}' holds no token ids", what, text));
  return out;
}

std::vector<int32_t> text_prompt(const std::string& text, bool bytes, const std::string& what) {
  if (!bytes) return parse_ids(text, what + " (token ids: this model was not trained on the bytes task)");
  std::vector<int32_t> out;
  for (unsigned char ch : text) out.push_back(ch);
  if (out.empty()) throw UsageError(fmt::format("{} is empty", what));
  return out;
}

std::vector<std::vector<int32_t>> collect_prompts(const Cli& c, bool bytes, int64_t vocab) {
  std::vector<std::vector<int32_t>> prompts;
  if (c.bench) {  // random ids, the same for every run of one seed
    Philox rng(c.gen.sampling.seed, /*stream=*/0xbe7c);
    for (int64_t b = 0; b < c.batch; ++b) {
      std::vector<int32_t> p(static_cast<size_t>(c.prompt_len));
      for (auto& t : p) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
      prompts.push_back(p);
    }
    return prompts;
  }
  for (const auto& p : c.prompts) prompts.push_back(text_prompt(p, bytes, "--prompt"));
  for (const auto& f : c.prompt_files) {
    std::ifstream in(f);
    if (!in) throw UsageError(fmt::format("--prompt-file {}: cannot read it", f));
    std::string line;
    int n = 0;
    while (std::getline(in, line))
      if (!line.empty()) prompts.push_back(text_prompt(line, bytes, fmt::format("{} line {}", f, ++n)));
    if (n == 0) throw UsageError(fmt::format("--prompt-file {}: no non-empty line", f));
  }
  for (const auto& p : c.ids) prompts.push_back(parse_ids(p, "--ids"));
  for (const auto& p : prompts)
    for (int32_t t : p)
      if (t >= vocab)
        throw UsageError(fmt::format("prompt token {} is outside the model's vocabulary [0, {})", t, vocab));
  return prompts;
}

void print_token(int32_t t, bool bytes) {
  if (bytes) std::fputc(t, stdout);
  else fmt::print(" {}", t);
}

int run(const Cli& c) {
  const Device device = resolve_device(c.device);
  LoadedModel loaded;
  if (!c.checkpoint.empty()) {
    loaded = load_generation_model(c.checkpoint, device, c.precision);
  } else {
    loaded.config = load_config(c.config, {});
    loaded.checkpoint = c.config + " (random initialisation)";
    const std::string p = !c.precision.empty()     ? c.precision
                          : device == Device::CUDA ? loaded.config.train.precision
                                                   : "fp32";
    loaded.model = std::make_unique<MambaLM>(loaded.config.model, loaded.config.seed, DType::Float32, device,
                                             p == "bf16" ? DType::BFloat16 : DType::Float32);
  }
  const bool bytes = loaded.config.task.name == "bytes";
  const int64_t vocab = loaded.config.model.vocab_size;
  std::vector<std::vector<int32_t>> prompts = collect_prompts(c, bytes, vocab);
  const MambaLM& model = *loaded.model;
  fmt::print(stderr, "generate | {} (step {}) | {} | {} layers, d_model {}, vocab {} | {} prompt(s)\n",
             loaded.checkpoint, loaded.step, device == Device::CUDA ? "cuda" : "cpu", model.config().n_layer,
             model.config().d_model, vocab, prompts.size());

  GenerationOptions gen = c.gen;
  const bool stream = !c.quiet && !c.bench && prompts.size() == 1;
  if (stream) {
    for (int32_t t : prompts[0]) print_token(t, bytes);
    std::fflush(stdout);
    gen.on_token = [bytes](int64_t, int32_t t) {
      print_token(t, bytes);
      std::fflush(stdout);
    };
  }
  if (c.bench) generate(model, vocab, prompts, gen);  // a warm-up run: handles, workspaces, graph capture
  GenerationResult r = generate(model, vocab, prompts, gen);
  if (stream) fmt::print("\n");
  if (!c.quiet && !c.bench && !stream) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      fmt::print("--- sample {} ---\n", i);
      for (int32_t t : prompts[i]) print_token(t, bytes);
      for (int32_t t : r.tokens[i]) print_token(t, bytes);
      fmt::print("\n");
    }
  }
  std::fflush(stdout);
  const double new_tokens = static_cast<double>(prompts.size()) * static_cast<double>(c.gen.max_new_tokens);
  const double total = r.prefill_seconds + r.decode_seconds;
  fmt::print(stderr,
             "{} x {} new tokens in {:.3f} s: {:.1f} tokens/s (prefill {:.3f} s; decode {} steps in {:.3f} s, "
             "{:.1f} tokens/s{})\n",
             prompts.size(), c.gen.max_new_tokens, total, new_tokens / total, r.prefill_seconds, r.decode_steps,
             r.decode_seconds, new_tokens / std::max(r.decode_seconds, 1e-12),
             r.used_graph ? ", CUDA graph" : "");
  if (c.bench)
    fmt::print(
        "{{\"impl\": \"s6\", \"batch\": {}, \"prompt_len\": {}, \"new_tokens\": {}, \"prefill_s\": {}, "
        "\"decode_s\": {}, \"total_s\": {}, \"tokens_per_s\": {}, \"cuda_graph\": {}}}\n",
        prompts.size(), c.prompt_len, c.gen.max_new_tokens, r.prefill_seconds, r.decode_seconds, total,
        new_tokens / total, r.used_graph ? "true" : "false");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    fmt::print("{}", kUsage);
    return kExitOk;
  }
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& e) {
    fmt::print(stderr, "generate: {}\n{}", e.what(), kUsage);
    return kExitConfigError;
  } catch (...) {
    return report_exception("generate");
  }
}
