// `export`: an s6 checkpoint (or run dir) -> a Hugging Face folder, or the logits of any model
// source on given tokens (for comparisons with other implementations). Exit codes as `train`'s.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "core/error.h"
#include "trainer/config.h"
#include "trainer/exit_codes.h"
#include "trainer/exit_report.h"
#include "trainer/hf_model.h"

namespace {

const char* kUsage =
    "usage: export --checkpoint PATH --out DIR\n"
    "       export --logits MODEL --ids 1,2,3[;4,5,6 ...] [--out FILE]\n"
    "  --checkpoint PATH  an s6 checkpoint (.h5) or a run directory (its newest checkpoint);\n"
    "                     DIR receives config.json and model.safetensors (transformers' MambaForCausalLM)\n"
    "  --logits MODEL     run MODEL (a Hugging Face folder, a run directory or a .h5 checkpoint) in\n"
    "                     float32 on the CPU on the given token rows (';' between rows, all the same\n"
    "                     length) and write {\"shape\": [B, L, V], \"logits\": [...]} as JSON\n";

using namespace s6;
using namespace s6::trainer;

std::vector<std::vector<int64_t>> parse_ids(const std::string& text) {
  std::vector<std::vector<int64_t>> rows(1);
  std::string num;
  auto flush = [&] {
    if (num.empty()) throw std::runtime_error(fmt::format("--ids '{}': an empty token", text));
    size_t used = 0;
    int64_t v = std::stoll(num, &used);
    if (used != num.size() || v < 0)
      throw std::runtime_error(fmt::format("--ids: '{}' is not a token id", num));
    rows.back().push_back(v);
    num.clear();
  };
  for (char ch : text) {
    if (ch == ',') flush();
    else if (ch == ';') {
      flush();
      rows.emplace_back();
    } else if (ch != ' ') num += ch;
  }
  flush();
  for (const auto& r : rows)
    if (r.size() != rows[0].size())
      throw std::runtime_error("--ids: every row needs the same number of tokens");
  return rows;
}

int dump_logits(const std::string& model_path, const std::string& ids_text, const std::string& out_path) {
  const auto rows = parse_ids(ids_text);
  MambaLM model = load_model(model_path, Device::CPU);
  const int64_t b = static_cast<int64_t>(rows.size()), l = static_cast<int64_t>(rows[0].size());
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  autograd::NoGradGuard no_grad;
  Tensor logits = model.forward(Tensor::from_vector(flat, {b, l}));
  const std::vector<float> v = logits.to_vector<float>();
  std::string text = fmt::format("{{\"shape\": [{}, {}, {}], \"logits\": [", b, l, logits.size(2));
  for (size_t i = 0; i < v.size(); ++i) text += fmt::format("{}{:.9g}", i ? ", " : "", v[i]);
  text += "]}\n";
  if (out_path.empty()) {
    fmt::print("{}", text);
  } else {
    std::ofstream f(out_path);
    f << text;
    if (!f) throw std::runtime_error(fmt::format("{}: cannot write the file", out_path));
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, out, logits_of, ids;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "export: {} needs a value\n{}", a, kUsage);
        std::exit(kExitConfigError);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      fmt::print("{}", kUsage);
      return kExitOk;
    } else if (a == "--checkpoint") checkpoint = value();
    else if (a == "--out") out = value();
    else if (a == "--logits") logits_of = value();
    else if (a == "--ids") ids = value();
    else {
      fmt::print(stderr, "export: unknown argument '{}'\n{}", a, kUsage);
      return kExitConfigError;
    }
  }
  const bool exporting = !checkpoint.empty();
  if (exporting == !logits_of.empty() || (exporting && out.empty()) || (!exporting && ids.empty())) {
    fmt::print(stderr, "export: give either --checkpoint PATH --out DIR, or --logits MODEL --ids ...\n{}",
               kUsage);
    return kExitConfigError;
  }
  try {
    if (!exporting) return dump_logits(logits_of, ids, out);
    std::string source;
    HfModel m = read_s6_checkpoint(checkpoint, &source);
    write_hf_folder(out, m.config, m.weights);
    fmt::print("export: {} -> {}/config.json, {}/model.safetensors ({} tensors)\n", source, out, out,
               m.weights.size());
    return kExitOk;
  } catch (...) {
    return report_exception("export");
  }
}
