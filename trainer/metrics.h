// Training output: metrics.jsonl records and the human progress line (bar on a TTY).
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace s6::trainer {

struct TrainRecord {
  int64_t step;
  double loss, accuracy, lr, grad_norm, ms, tokens_per_s;
};
struct EvalRecord {
  int64_t step, length;
  double loss, accuracy;
  double perplexity = NAN, bits_per_byte = NAN;  // written when finite (tokens and bytes tasks)
};

// Appends one JSON object per line; flushed after each line so a crash loses nothing written. A
// line that cannot be written (disk full, file size limit, I/O error) throws IoError naming the
// file, rather than being lost.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);  // "" = write nothing (ranks other than 0)
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const TrainRecord& r);
  void write(const EvalRecord& r);
  void write_event(int64_t step, const std::string& event, const std::string& detail);

 private:
  void line(const std::string& json);
  std::FILE* file_ = nullptr;
  std::string path_;
};

// One progress line per log step: a redrawn bar on a terminal, plain lines otherwise.
class Progress {
 public:
  // Elapsed time counts from construction; the ETA extrapolates the steps done since start_step.
  explicit Progress(int64_t total_steps, int64_t start_step = 0);
  void update(const TrainRecord& r);
  void finish();

 private:
  int64_t total_;
  int64_t start_step_;
  std::chrono::steady_clock::time_point start_;
  bool tty_;
  bool open_line_ = false;
};

// JSON number: finite values as shortest round-trip text, non-finite as null.
std::string json_number(double v);

}  // namespace s6::trainer
