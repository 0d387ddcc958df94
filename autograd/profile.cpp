#include "autograd/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <vector>

#include "core/cuda_runtime.h"

namespace s6::autograd::profile {
namespace {

using Clock = std::chrono::steady_clock;

struct Entry {
  double seconds = 0;
  int64_t calls = 0;
};

struct State {
  bool started = false;
  Clock::time_point last;
  std::map<std::string, Entry> entries;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("S6_PROFILE");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

void restart_clock() {
  if (!enabled()) return;
  if (cuda::available()) cuda::synchronize();
  state().started = true;
  state().last = Clock::now();
}

void mark(const char* kind, const char* label) {
  if (!enabled()) return;
  if (cuda::available()) cuda::synchronize();
  State& s = state();
  const auto now = Clock::now();
  if (s.started) {
    Entry& e = s.entries[fmt::format("{} {}", kind, label)];
    e.seconds += std::chrono::duration<double>(now - s.last).count();
    ++e.calls;
  }
  s.started = true;
  s.last = now;
}

std::string report() {
  const State& s = state();
  if (s.entries.empty()) return "";
  std::vector<std::pair<std::string, Entry>> rows(s.entries.begin(), s.entries.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
  double total = 0;
  for (auto& [label, e] : rows) total += e.seconds;
  std::string out = fmt::format("{:<34} {:>10} {:>8} {:>10} {:>6}\n", "S6_PROFILE (synchronized)", "total ms",
                                "calls", "mean us", "share");
  for (auto& [label, e] : rows)
    out += fmt::format("{:<34} {:>10.1f} {:>8} {:>10.1f} {:>5.1f}%\n", label, 1e3 * e.seconds, e.calls,
                       1e6 * e.seconds / static_cast<double>(e.calls), 100.0 * e.seconds / total);
  return out;
}

}  // namespace s6::autograd::profile
