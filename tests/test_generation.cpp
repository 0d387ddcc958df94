// Generation: prefill + recurrent step against the full forward, greedy decoding against the full
// forward's argmax, seeded sampling, the top-k / top-p cutoffs, mixed prompt lengths, and build/generate.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/philox.h"
#include "tests/train_helpers.h"
#include "trainer/generation.h"
#include "trainer/trainer.h"

using namespace s6;
using namespace s6::trainer;
namespace fs = std::filesystem;

namespace {

MambaConfig small_model(int64_t vocab) {
  MambaConfig c;
  c.d_model = 16;
  c.n_layer = 2;
  c.vocab_size = vocab;
  c.d_state = 4;
  c.pad_vocab_size_multiple = 8;
  return c;
}

// The full forward's logits (batch, length, padded vocab) as doubles on the host.
std::vector<double> full_logits(const MambaLM& m, const std::vector<int32_t>& ids, int64_t batch) {
  autograd::NoGradGuard ng;
  const int64_t length = static_cast<int64_t>(ids.size()) / batch;
  return m.forward(Tensor::from_vector<int32_t>(ids, {batch, length}).to(m.device()))
      .to(DType::Float64)
      .to_vector<double>();
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Philox rng(seed, 5);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return out;
}

// Greedy decoding must pick, at every new position, the argmax of the full forward over the
// prompt plus everything generated before it (over the first `vocab` logits). Returns the
// smallest margin between the top two logits seen (ties would make the check meaningless).
double check_greedy_matches_forward(const MambaLM& m, int64_t vocab, const std::vector<int32_t>& prompt,
                                    int64_t max_new, bool graph, double tie_tolerance = 0) {
  GenerationOptions o;
  o.max_new_tokens = max_new;
  o.sampling.temperature = 0;
  o.cuda_graph = graph;
  GenerationResult r = generate(m, vocab, {prompt}, o);
  REQUIRE(static_cast<int64_t>(r.tokens[0].size()) == max_new);
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), r.tokens[0].begin(), r.tokens[0].end());
  const std::vector<double> logits = full_logits(m, seq, 1);
  const int64_t padded = m.config().padded_vocab();
  double margin = 1e300;
  for (int64_t i = 0; i < max_new; ++i) {
    const int64_t pos = static_cast<int64_t>(prompt.size()) - 1 + i;  // predicts seq[pos + 1]
    const double* row = logits.data() + pos * padded;
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (row[v] > row[best]) best = v;
    double second = -1e300;
    for (int64_t v = 0; v < vocab; ++v)
      if (v != best) second = std::max(second, row[v]);
    margin = std::min(margin, row[best] - second);
    CAPTURE(i);
    // A device's recurrent step and its parallel scan round differently: a near tie may go either way.
    CHECK((seq[pos + 1] == best || row[best] - row[seq[pos + 1]] <= tie_tolerance));
  }
  return margin;
}

}  // namespace

TEST_CASE("generation: prefill with the scan, then one step, equals the full forward's last logits") {
  autograd::NoGradGuard ng;
  MambaLM m(small_model(30), 11, DType::Float64);
  const int64_t batch = 3, length = 9;
  std::vector<int32_t> ids = random_ids(batch * (length + 1), 30, 1);
  const std::vector<double> full = full_logits(m, ids, batch);
  std::vector<int32_t> prefix, last;
  for (int64_t b = 0; b < batch; ++b) {
    prefix.insert(prefix.end(), ids.begin() + b * (length + 1), ids.begin() + b * (length + 1) + length);
    last.push_back(ids[b * (length + 1) + length]);
  }
  InferenceState state = m.new_state(batch);
  Tensor pre = m.forward(Tensor::from_vector<int32_t>(prefix, {batch, length}), &state);
  std::vector<double> stepped = m.step(Tensor::from_vector<int32_t>(last, {batch}), state).to_vector<double>();
  const int64_t V = m.config().padded_vocab();
  double worst = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t v = 0; v < V; ++v)
      worst = std::max(worst, std::fabs(stepped[b * V + v] - full[(b * (length + 1) + length) * V + v]));
  MESSAGE("prefill + step vs full forward, max |diff| = ", worst);
  CHECK(worst < 1e-12);
  // MambaLM::prefill (the head at the last position only) gives the full forward's last logits
  // and the same state as forward(ids, &state).
  InferenceState fresh = m.new_state(batch);
  std::vector<double> last_only =
      m.prefill(Tensor::from_vector<int32_t>(prefix, {batch, length}), fresh).to_vector<double>();
  const std::vector<double> pre_all = pre.to_vector<double>();
  double worst_prefill = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t v = 0; v < V; ++v)
      worst_prefill = std::max(worst_prefill,
                               std::fabs(last_only[b * V + v] - pre_all[(b * length + length - 1) * V + v]));
  CHECK(worst_prefill < 1e-12);
  InferenceState again = m.new_state(batch);
  m.forward(Tensor::from_vector<int32_t>(prefix, {batch, length}), &again);
  for (int64_t i = 0; i < m.config().n_layer; ++i) {
    CHECK(fresh.layers[i].ssm_state.to_vector<double>() == again.layers[i].ssm_state.to_vector<double>());
    CHECK(fresh.layers[i].conv_state.to_vector<double>() == again.layers[i].conv_state.to_vector<double>());
  }
}

TEST_CASE("generation: greedy decoding equals the argmax of the full forward at every position (CPU)") {
  MambaLM m(small_model(30), 12, DType::Float64);
  const double margin = check_greedy_matches_forward(m, 30, random_ids(7, 30, 2), 24, false);
  MESSAGE("smallest top-2 logit margin along the way: ", margin);
  CHECK(margin > 1e-9);
}

TEST_CASE("generation: prompts of different lengths in one batch decode as each would alone") {
  MambaLM m(small_model(30), 13, DType::Float64);
  std::vector<std::vector<int32_t>> prompts = {random_ids(3, 30, 3), random_ids(8, 30, 4),
                                               random_ids(5, 30, 5)};
  GenerationOptions o;
  o.max_new_tokens = 6;
  o.sampling.temperature = 0;
  std::map<int64_t, std::vector<int32_t>> streamed;
  o.on_token = [&](int64_t row, int32_t t) { streamed[row].push_back(t); };
  GenerationResult together = generate(m, 30, prompts, o);
  REQUIRE(together.tokens.size() == 3);
  o.on_token = nullptr;
  for (size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    CHECK(streamed[static_cast<int64_t>(i)] == together.tokens[i]);
    CHECK(together.tokens[i].size() == 6);
    CHECK(generate(m, 30, {prompts[i]}, o).tokens[0] == together.tokens[i]);
  }
}

TEST_CASE("generation: a fixed seed gives fixed samples, another seed other samples") {
  MambaLM m(small_model(30), 14, DType::Float32);
  GenerationOptions o;
  o.max_new_tokens = 40;
  o.sampling.temperature = 1.0;
  o.sampling.seed = 21;
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5, 6}};
  GenerationResult a = generate(m, 30, prompts, o), b = generate(m, 30, prompts, o);
  CHECK(a.tokens == b.tokens);
  o.sampling.seed = 22;
  CHECK(generate(m, 30, prompts, o).tokens != a.tokens);
  for (const auto& row : a.tokens)
    for (int32_t t : row) CHECK((t >= 0 && t < 30));  // never a padding id of the padded vocabulary (32)
}

TEST_CASE("generation: the first sampled token follows the prefill's logits, with freed host memory poisoned") {
  // Sampling once read the prefill's logits through a pointer into a freed temporary: stale bytes
  // usually, so runs differed only now and then. Poisoning freed memory with NaN makes such a read
  // pick the wrong token every time.
  struct Poison {
    Poison() { set_poison_freed_host_memory(true); }
    ~Poison() { set_poison_freed_host_memory(false); }
  } poison;
  MambaLM m(small_model(30), 14, DType::Float32);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5, 6}};
  std::vector<float> logits;
  {
    autograd::NoGradGuard ng;
    InferenceState state = m.new_state(2);
    logits = m.prefill(Tensor::from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}), state).to_vector<float>();
  }
  const int64_t V = m.config().padded_vocab();
  GenerationOptions o;
  o.max_new_tokens = 1;
  o.sampling.temperature = 1.0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    o.sampling.seed = seed;
    GenerationResult r = generate(m, 30, prompts, o);
    for (int64_t row = 0; row < 2; ++row) {
      CAPTURE(seed);
      CAPTURE(row);
      CHECK(r.tokens[row][0] ==
            sample_from_logits(logits.data() + row * V, 30, o.sampling, sampling_uniform(seed, row, 3)));
    }
  }
}

TEST_CASE("generation: sampling respects top-k and top-p and follows the softmax") {
  // Probabilities 0.125, 0.0625, 0.5, 0.25, 0.0625 at temperature 1.
  std::vector<float> logits = {std::log(0.125f), std::log(0.0625f), std::log(0.5f), std::log(0.25f),
                               std::log(0.0625f)};
  auto counts = [&](SamplingOptions s) {
    std::map<int32_t, int> c;
    const int n = 4000;
    for (int i = 0; i < n; ++i) ++c[sample_from_logits(logits.data(), 5, s, (i + 0.5) / n)];
    return c;
  };
  SamplingOptions s;
  std::map<int32_t, int> all = counts(s);
  CHECK(all[2] == 2000);  // a grid of u gives the exact shares
  CHECK(all[3] == 1000);
  CHECK(all[0] == 500);
  CHECK(all[1] == 250);
  CHECK(all[4] == 250);
  s.top_k = 2;
  std::map<int32_t, int> k2 = counts(s);
  CHECK(k2.size() == 2);
  CHECK(k2[2] == doctest::Approx(4000 * 2.0 / 3).epsilon(0.001));
  s.top_k = 0;
  s.top_p = 0.74;  // reached by the top two (0.75)
  CHECK(counts(s).size() == 2);
  s.top_p = 0.76;
  std::map<int32_t, int> p3 = counts(s);
  CHECK(p3.size() == 3);
  CHECK(p3.count(0) == 1);
  s.top_p = 1.0;
  s.temperature = 0;  // greedy: the first maximum
  CHECK(counts(s) == std::map<int32_t, int>{{2, 4000}});
  // Fixed (seed, row, position) -> fixed uniform; neighbours differ.
  CHECK(sampling_uniform(1, 0, 5) == sampling_uniform(1, 0, 5));
  CHECK(sampling_uniform(1, 0, 5) != sampling_uniform(1, 1, 5));
  CHECK(sampling_uniform(1, 0, 5) != sampling_uniform(2, 0, 5));
}

TEST_CASE(
    "generation: build/generate continues a bytes-task checkpoint and streams its text (and its eval has bits "
    "per byte)") {
  fs::path dir = testing::fresh_dir("gen_cli");
  TrainConfig c = testing::tiny_config(dir / "run", 2);
  c.task.name = "bytes";
  c.task.vocab_size = 256;
  c.model.vocab_size = 256;
  c.task.loss_positions = "all";
  { std::ofstream(dir / "corpus.txt") << std::string(400, 'a') + std::string(400, 'b'); }
  c.data.train_glob = (dir / "corpus.txt").string();
  c.data.val_fraction = 0.25;
  REQUIRE(run_training(c, RunOptions{}) == 0);
  {  // the bytes task's evaluation: bits per byte = loss / ln 2, perplexity = exp(loss)
    std::ifstream in(dir / "run" / "metrics.jsonl");
    static const std::regex re(
        R"re("split": "eval".*"loss": ([^,]+),.*"perplexity": ([^,]+), "bits_per_byte": ([^}]+)\})re");
    int found = 0;
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, re)) continue;
      const double loss = std::stod(m[1].str());
      CHECK(std::stod(m[2].str()) == doctest::Approx(std::exp(loss)).epsilon(1e-9));
      CHECK(std::stod(m[3].str()) == doctest::Approx(loss / std::log(2.0)).epsilon(1e-9));
      ++found;
    }
    CHECK(found == 1);
  }
  const std::string gen = fs::path(S6_TRAIN_BINARY).parent_path() / "generate";
  auto run = [&](const std::string& args) {
    std::string out;
    FILE* p = ::popen((gen + " " + args + " 2>&1").c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    const int status = ::pclose(p);
    return std::pair<int, std::string>{WEXITSTATUS(status), out};
  };
  auto [rc,
        out] = run("--checkpoint " + (dir / "run").string() + " --prompt hello --max-new-tokens 20 --seed 4");
  CHECK(rc == 0);
  CHECK(out.find("\nhello") != std::string::npos);
  CHECK(out.find("tokens/s") != std::string::npos);
  auto again = run("--checkpoint " + (dir / "run").string() + " --prompt hello --max-new-tokens 20 --seed 4");
  REQUIRE(again.second.find("\nhello") != std::string::npos);
  CHECK(again.second.substr(again.second.find("\nhello"), 26) == out.substr(out.find("\nhello"), 26));
  CHECK(run("--checkpoint " + (dir / "nothing").string() + " --prompt x").first == 4);
  CHECK(run("--checkpoint " + (dir / "run").string()).first == 2);
  CHECK(run("--checkpoint " + (dir / "run").string() + " --ids 300 --max-new-tokens 2").first == 2);
  fs::remove_all(dir);
}

TEST_CASE("generation (cuda): greedy decoding equals the full forward's argmax, graph and eager alike") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  MambaLM m(small_model(30), 15, DType::Float32, Device::CUDA);
  std::vector<int32_t> prompt = random_ids(37, 30, 6);
  const double margin = check_greedy_matches_forward(m, 30, prompt, 32, true, 1e-4);
  MESSAGE("smallest top-2 logit margin (fp32, CUDA): ", margin);
  GenerationOptions o;
  o.max_new_tokens = 32;
  o.sampling.temperature = 0;
  o.cuda_graph = false;
  GenerationResult eager = generate(m, 30, {prompt}, o);
  o.cuda_graph = true;
  GenerationResult graph = generate(m, 30, {prompt}, o);
  CHECK(graph.used_graph);
  CHECK(eager.tokens == graph.tokens);  // the replayed graph runs the eager step's kernels
  // Sampling through the graph: a fixed seed gives fixed samples.
  o.sampling.temperature = 1.0;
  o.sampling.top_k = 10;
  CHECK(generate(m, 30, {prompt, prompt}, o).tokens == generate(m, 30, {prompt, prompt}, o).tokens);
}
