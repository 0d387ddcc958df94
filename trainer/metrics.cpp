// metrics.jsonl writer and the progress display.
#include "trainer/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "trainer/io_error.h"

namespace s6::trainer {

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }

MetricsWriter::MetricsWriter(const std::string& path) {
  if (path.empty()) return;  // a rank other than 0: records nothing
  path_ = path;
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw_io("open for appending", path, errno);
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::line(const std::string& json) {
  if (!file_) return;
  const std::string text = json + "\n";
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    const int err = errno ? errno : EIO;
    std::fclose(file_);  // what is still buffered cannot be written either
    file_ = nullptr;
    throw_io("append to", path_, err);
  }
}

void MetricsWriter::write(const TrainRecord& r) {
  line(fmt::format(
      R"({{"step": {}, "loss": {}, "accuracy": {}, "lr": {}, "grad_norm": {}, "ms": {}, "tokens_per_s": {}}})",
      r.step, json_number(r.loss), json_number(r.accuracy), json_number(r.lr), json_number(r.grad_norm),
      json_number(r.ms), json_number(r.tokens_per_s)));
}

void MetricsWriter::write(const EvalRecord& r) {
  std::string text;  // language-modelling figures (evaluate.h), absent for the synthetic tasks
  if (std::isfinite(r.perplexity)) text += fmt::format(R"(, "perplexity": {})", json_number(r.perplexity));
  if (std::isfinite(r.bits_per_byte))
    text += fmt::format(R"(, "bits_per_byte": {})", json_number(r.bits_per_byte));
  line(fmt::format(R"({{"step": {}, "split": "eval", "length": {}, "loss": {}, "accuracy": {}{}}})", r.step,
                   r.length, json_number(r.loss), json_number(r.accuracy), text));
}

void MetricsWriter::write_event(int64_t step, const std::string& event, const std::string& detail) {
  std::string escaped;
  for (char c : detail) {
    if (c == '"' || c == '\\') escaped += '\\';
    escaped += (c == '\n') ? ' ' : c;
  }
  line(fmt::format(R"({{"step": {}, "event": "{}", "detail": "{}"}})", step, event, escaped));
}

Progress::Progress(int64_t total_steps, int64_t start_step)
    : total_(total_steps),
      start_step_(start_step),
      start_(std::chrono::steady_clock::now()),
      tty_(isatty(STDOUT_FILENO) != 0) {}

static std::string clock_text(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(seconds, 0.0)));
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02}", s / 60, s % 60);
}

void Progress::update(const TrainRecord& r) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = r.step - start_step_;
  const std::string eta = done > 0 ? clock_text(elapsed / static_cast<double>(done) *
                                                static_cast<double>(total_ - r.step))
                                   : "?";
  std::string stats = fmt::format(
      "loss {:.4f} | acc {:5.1f}% | lr {:.2e} | gnorm {:.3f} | {:.2f} ms/step | {:.3g} tok/s | {} elapsed, ETA "
      "{}",
      r.loss, 100.0 * r.accuracy, r.lr, r.grad_norm, r.ms, r.tokens_per_s, clock_text(elapsed), eta);
  if (tty_) {
    constexpr int kWidth = 24;
    int filled = total_ > 0 ? static_cast<int>(kWidth * r.step / total_) : kWidth;
    fmt::print("\r[{}{}] {}/{} | {}\x1b[K", std::string(filled, '#'), std::string(kWidth - filled, '.'), r.step,
               total_, stats);
    open_line_ = true;
  } else {
    fmt::print("step {}/{} | {}\n", r.step, total_, stats);
  }
  std::fflush(stdout);
}

void Progress::finish() {
  if (open_line_) fmt::print("\n");
  open_line_ = false;
  std::fflush(stdout);
}

}  // namespace s6::trainer
