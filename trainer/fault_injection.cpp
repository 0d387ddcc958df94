// S6_FAULT_INJECT parsed once; the hooks raise the signal the tests ask for.
#include "trainer/fault_injection.h"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace s6::trainer::fault_injection {
namespace {

struct Plan {
  int signal = 0;  // raised after step `at_step`
  int64_t at_step = -1;
  bool kill_in_checkpoint = false;
};

const Plan& plan() {
  static const Plan p = [] {
    const char* env = std::getenv("S6_FAULT_INJECT");
    const std::string v = env ? env : "";
    Plan out;
    out.kill_in_checkpoint = v == "kill_during_checkpoint";
    for (auto [prefix, sig] : {std::pair{"sigterm_at_step=", SIGTERM}, std::pair{"sigkill_at_step=", SIGKILL}})
      if (v.rfind(prefix, 0) == 0) {
        out.signal = sig;
        out.at_step = std::stoll(v.substr(std::strlen(prefix)));
      }
    return out;
  }();
  return p;
}

}  // namespace

void after_step(int64_t done) {
  if (plan().signal && done == plan().at_step) std::raise(plan().signal);
}

void during_checkpoint_write() {
  if (plan().kill_in_checkpoint) std::raise(SIGKILL);
}

}  // namespace s6::trainer::fault_injection
