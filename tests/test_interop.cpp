// Hugging Face interop on the CPU: safetensors parsing (hand-made files, corrupt headers), export
// -> import round trips (weights and logits bitwise), init.from a folder, the `export` program.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/tape.h"
#include "tests/train_helpers.h"
#include "trainer/checkpoint.h"
#include "trainer/exit_codes.h"
#include "trainer/generation.h"
#include "trainer/hf_model.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

using namespace s6;
using namespace s6::trainer;
using namespace s6::testing;
namespace fs = std::filesystem;

namespace {

// A safetensors file from a header text and raw data bytes, length field as given (or the
// header's true length).
void write_raw(const fs::path& file, const std::string& header, const std::string& data, int64_t len = -1) {
  uint64_t n = len < 0 ? header.size() : static_cast<uint64_t>(len);
  std::ofstream f(file, std::ios::binary);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  f << header << data;
}

std::string le_floats(std::initializer_list<float> v) {
  std::string s;
  for (float x : v) s.append(reinterpret_cast<const char*>(&x), 4);  // the test machine is little-endian
  return s;
}

MambaConfig small_model() {
  MambaConfig m;
  m.d_model = 16;
  m.n_layer = 2;
  m.vocab_size = 10;  // padded to 16
  m.d_state = 4;
  return m;
}

std::map<std::string, Tensor> weights_of(const MambaLM& model) {
  std::map<std::string, Tensor> w;
  for (const NamedParameter& p : model.parameters()) w[p.name] = p.tensor;
  return w;
}

std::vector<float> logits_of(const MambaLM& model) {
  autograd::NoGradGuard no_grad;
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 5, 7, 2, 0, 3, 7, 7, 4, 6, 6, 1}, {2, 6});
  return model.forward(ids).to_vector<float>();
}

int run_program(const std::vector<std::string>& args) {
  std::string cmd;
  for (const auto& a : args) cmd += "'" + a + "' ";
  int status = std::system((cmd + ">/dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("safetensors: a hand-made file parses (F32, BF16, F16, F64, metadata)") {
  fs::path dir = fresh_dir("st_hand");
  std::string data = le_floats({1.5f, -2.0f});
  data += std::string("\x80\x3f\x00\xc0", 4);          // bf16 1.0, -2.0
  data += std::string("\x00\x3c\x00\xc0\x01\x00", 6);  // f16 1.0, -2.0, 2^-24
  double d = 0.25;
  data.append(reinterpret_cast<const char*>(&d), 8);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"c":{"dtype":"F16","shape":[3],"data_offsets":[12,18]},)"
      R"("d":{"dtype":"F64","shape":[],"data_offsets":[18,26]}})";
  write_raw(dir / "x.safetensors", header, data);
  SafetensorsFile f = read_safetensors((dir / "x.safetensors").string());
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.tensors.at("a").to_vector<float>() == std::vector<float>{1.5f, -2.0f});
  CHECK(f.tensors.at("b").shape() == Shape{1, 2});
  CHECK(f.tensors.at("b").to_vector<float>() == std::vector<float>{1.0f, -2.0f});
  CHECK(f.tensors.at("c").to_vector<float>() == std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24)});
  CHECK(f.tensors.at("d").shape() == Shape{});
  CHECK(f.tensors.at("d").to_vector<float>() == std::vector<float>{0.25f});
  fs::remove_all(dir);
}

TEST_CASE("safetensors: write -> read gives the same tensors bit for bit, the data 8-byte aligned") {
  fs::path dir = fresh_dir("st_rt");
  std::map<std::string, Tensor> in{
      {"x", Tensor::from_vector(std::vector<float>{1e-30f, -0.0f, 3.25f, 7e20f}, {2, 2})},
      {"y.z", Tensor::from_vector(std::vector<float>{42.0f}, {1})}};
  const std::string file = (dir / "w.safetensors").string();
  write_safetensors(file, in, {{"k", "v"}});
  SafetensorsFile out = read_safetensors(file);
  REQUIRE(out.tensors.size() == 2);
  for (const auto& [name, t] : in) {
    CHECK(out.tensors.at(name).shape() == t.shape());
    std::vector<float> a = t.to_vector<float>(), b = out.tensors.at(name).to_vector<float>();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  }
  CHECK(out.metadata.at("k") == "v");
  std::ifstream f(file, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  CHECK(len[0] % 8 == 0);
  CHECK_FALSE(fs::exists(file + ".tmp"));
  fs::remove_all(dir);
}

TEST_CASE("safetensors: corrupt headers are refused with a message naming the file") {
  fs::path dir = fresh_dir("st_bad");
  const std::string file = (dir / "bad.safetensors").string();
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data = le_floats({1, 2});
  auto refused = [&](const std::string& expected) {
    const std::string text = file + ": " + expected;
    CHECK_THROWS_WITH_AS(read_safetensors(file), doctest::Contains(text.c_str()), SafetensorsError);
  };
  write_raw(file, good, data);
  CHECK_NOTHROW(read_safetensors(file));
  { std::ofstream(file) << "abc"; }
  refused("not a safetensors file: 3 bytes");
  write_raw(file, good, data, 1 << 20);
  refused(
      "not a safetensors file: the header length field says 1048576 bytes but the file has 62 bytes after it");
  write_raw(file, R"({"a":{"dtype":"F32",)", data);
  refused("the safetensors header is not valid JSON");
  write_raw(file, "[1, 2]", data);
  refused("the safetensors header is not a JSON object");
  write_raw(file, R"({"a":{"dtype":"F32","shape":[2]}})", data);
  refused("tensor 'a': the header entry needs dtype, shape and data_offsets");
  write_raw(file, R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", data);
  refused("tensor 'a': dtype I32 is not supported");
  write_raw(file, R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", data);
  refused("tensor 'a': shape [2,-1] has an entry that is not a non-negative integer");
  write_raw(file, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data);
  refused("tensor 'a': data_offsets [0, 16] lie outside the 8 data bytes");
  write_raw(file, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data);
  refused("tensor 'a': data_offsets span 8 bytes but 3 F32 elements of shape [3] need 12");
  CHECK_THROWS_WITH_AS(read_safetensors((dir / "missing.safetensors").string()),
                       doctest::Contains("missing.safetensors: cannot open the file"), SafetensorsError);
  fs::remove_all(dir);
}

TEST_CASE("hf export: folder -> import gives identical weights and logits (tied, untied with biases)") {
  for (bool tied : {true, false}) {
    CAPTURE(tied);
    fs::path dir = fresh_dir(tied ? "hf_tied" : "hf_untied");
    MambaConfig m = small_model();
    m.tie_embeddings = tied;
    m.bias = !tied;
    m.dt_rank = 3;
    m.norm_eps = 1e-6;
    MambaLM model(m, 11);
    write_hf_folder(dir.string(), m, weights_of(model));
    // transformers' names: embeddings (plural), no stored head when tied.
    SafetensorsFile stored = read_safetensors((dir / "model.safetensors").string());
    CHECK(stored.tensors.count("backbone.embeddings.weight") == 1);
    CHECK(stored.tensors.count("backbone.embedding.weight") == 0);
    CHECK(stored.tensors.count("lm_head.weight") == (tied ? 0u : 1u));
    HfModel back = read_hf_folder(dir.string());
    CHECK(back.config.padded_vocab() == 16);
    CHECK(back.config.vocab_size == 10);
    CHECK(back.config.resolved_dt_rank() == 3);
    CHECK(back.config.norm_eps == 1e-6);
    CHECK(back.config.bias == !tied);
    CHECK(back.config.tie_embeddings == tied);
    REQUIRE(back.weights.size() == model.parameters().size());
    for (const NamedParameter& p : model.parameters()) {
      CAPTURE(p.name);
      REQUIRE(back.weights.count(p.name) == 1);
      CHECK(back.weights.at(p.name).to_vector<float>() == p.tensor.to_vector<float>());
    }
    CHECK(logits_of(load_model_from_hf_folder(dir.string(), Device::CPU)) == logits_of(model));
    fs::remove_all(dir);
  }
}

TEST_CASE("hf import: mamba_ssm's names, a stored tied head, defaults, and refusals that name the folder") {
  fs::path dir = fresh_dir("hf_import");
  MambaConfig m = small_model();
  m.pad_vocab_size_multiple = 1;
  m.vocab_size = 16;
  MambaLM model(m, 5);
  auto w = weights_of(model);
  w["lm_head.weight"] = w.at("backbone.embedding.weight");  // some savers store the tied head too
  write_safetensors((dir / "model.safetensors").string(), w);
  // A config as transformers writes it (no s6 entry; use_bias given since transformers' default is true).
  std::ofstream(dir / "config.json")
      << R"({"model_type":"mamba","hidden_size":16,"num_hidden_layers":2,"vocab_size":16,"state_size":4,)"
         R"("use_bias":false,"time_step_rank":"auto","layer_norm_epsilon":1e-5})";
  CHECK(logits_of(load_model_from_hf_folder(dir.string(), Device::CPU)) == logits_of(model));

  std::ofstream(dir / "config.json")
      << R"({"model_type":"mamba","hidden_size":16,"num_hidden_layers":2,"vocab_size":16,"state_size":4})";
  CHECK_THROWS_WITH_AS(read_hf_folder(dir.string()),
                       doctest::Contains("no tensor backbone.layers.0.mixer.in_proj.bias"), HfFolderError);
  std::ofstream(dir / "config.json") << R"({"model_type":"mamba2"})";
  CHECK_THROWS_WITH_AS(read_hf_folder(dir.string()), doctest::Contains("model_type is 'mamba2'"),
                       HfFolderError);
  std::ofstream(dir / "config.json") << "{";
  CHECK_THROWS_WITH_AS(read_hf_folder(dir.string()), doctest::Contains("config.json: not valid JSON"),
                       HfFolderError);
  fs::remove(dir / "model.safetensors");
  std::ofstream(dir / "config.json") << "{}";
  CHECK_THROWS_WITH_AS(read_hf_folder(dir.string()), doctest::Contains("has no model.safetensors"),
                       HfFolderError);
  fs::remove_all(dir);
}

TEST_CASE("hf: the export program writes a folder whose init.from run equals init.from the checkpoint") {
  fs::path src = fresh_dir("hf_src"), hf = fresh_dir("hf_out"), a = fresh_dir("hf_init_h5"),
           b = fresh_dir("hf_init_folder");
  REQUIRE(run_training(tiny_config(src, 10), RunOptions{}) == kExitOk);
  REQUIRE(run_program({S6_EXPORT_BINARY, "--checkpoint", src.string(), "--out", hf.string()}) == kExitOk);
  CHECK(nlohmann::json::parse(std::ifstream(hf / "config.json"))["hidden_size"] == 32);
  CHECK(logits_of(load_model(hf.string(), Device::CPU)) == logits_of(load_model(src.string(), Device::CPU)));
  TrainConfig from_h5 = tiny_config(a, 3), from_folder = tiny_config(b, 3);
  from_h5.init_from = final_checkpoint(src);
  from_folder.init_from = hf.string();
  REQUIRE(run_training(from_h5, RunOptions{}) == kExitOk);
  REQUIRE(run_training(from_folder, RunOptions{}) == kExitOk);
  CHECK(train_losses(a) == train_losses(b));
  check_identical(final_checkpoint(a), final_checkpoint(b));

  TrainConfig wrong = tiny_config(fresh_dir("hf_init_wrong"), 1);
  wrong.model.d_state = 8;
  wrong.init_from = hf.string();
  CHECK_THROWS_WITH_AS(
      run_training(wrong, RunOptions{}),
      doctest::Contains("tensor backbone.layers.0.mixer.A_log has shape [64, 16] but the model needs [64, 8]"),
      ConfigError);
  CHECK(run_program({S6_EXPORT_BINARY, "--checkpoint", (src / "nothing.h5").string(), "--out", hf.string()}) ==
        kExitCheckpointError);
  CHECK(run_program({S6_EXPORT_BINARY, "--out", hf.string()}) == kExitConfigError);
  for (const auto& d : {src, hf, a, b, fs::path(wrong.run_dir)}) fs::remove_all(d);
}

TEST_CASE("generate: a Hugging Face folder generates what the checkpoint it was exported from does") {
  fs::path src = fresh_dir("hf_gen_src"), hf = fresh_dir("hf_gen_out");
  REQUIRE(run_training(tiny_config(src, 10), RunOptions{}) == kExitOk);
  HfModel m = read_s6_checkpoint(src.string());
  write_hf_folder(hf.string(), m.config, m.weights);
  LoadedModel from_run = load_generation_model(src.string(), Device::CPU, "");
  LoadedModel from_hf = load_generation_model(hf.string(), Device::CPU, "");
  CHECK(from_run.step == 10);
  CHECK(from_hf.config.model.d_model == 32);
  GenerationOptions o;
  o.max_new_tokens = 12;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5, 6}};
  const GenerationResult a = generate(*from_run.model, 8, prompts, o), b = generate(*from_hf.model, 8, prompts, o);
  CHECK(a.tokens == b.tokens);
  CHECK_THROWS_AS(load_generation_model((src / "missing").string(), Device::CPU, ""), CheckpointError);
  fs::remove_all(src);
  fs::remove_all(hf);
}

TEST_CASE("trainer: an init.from shape mismatch names the key and does not suggest init.from") {
  fs::path src = fresh_dir("init_msg_src");
  REQUIRE(run_training(tiny_config(src, 1), RunOptions{}) == kExitOk);
  TrainConfig other = tiny_config(fresh_dir("init_msg_dst"), 1);
  other.model.d_model = 16;
  other.init_from = final_checkpoint(src);
  try {
    run_training(other, RunOptions{});
    FAIL("init.from into another shape was accepted");
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("model.d_model") != std::string::npos);
    CHECK(msg.find("use --resume never or init.from") == std::string::npos);
    CHECK(msg.find("set these model keys to the checkpoint's values") != std::string::npos);
  }
  fs::remove_all(src);
  fs::remove_all(other.run_dir);
}

TEST_CASE("hf export: a checkpoint whose stored config no longer loads as a whole still exports its model") {
  fs::path src = fresh_dir("hf_stale_cfg"), out = fresh_dir("hf_stale_out");
  REQUIRE(run_training(tiny_config(src, 1), RunOptions{}) == kExitOk);
  CheckpointContents c = read_checkpoint(final_checkpoint(src));
  const std::string yaml = c.meta.config_yaml;
  c.meta.config_yaml = yaml.substr(0, yaml.find("task:")) + "task:\n  name: a_task_this_build_lacks\n" +
                       yaml.substr(yaml.find("optim:"));
  REQUIRE_THROWS_AS(load_config_text(c.meta.config_yaml, "x", {}), ConfigError);
  const std::string file = (src / "edited.h5").string();
  write_checkpoint(file, c);
  HfModel m = read_s6_checkpoint(file);
  CHECK(m.config.d_model == 32);
  CHECK(m.config.vocab_size == 8);
  write_hf_folder(out.string(), m.config, m.weights);
  CHECK(logits_of(load_model(out.string(), Device::CPU)) ==
        logits_of(load_model(final_checkpoint(src), Device::CPU)));
  fs::remove_all(src);
  fs::remove_all(out);
}
