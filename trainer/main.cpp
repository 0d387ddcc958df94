// Entry point of `train`. The trainer itself lands with the trainer issue; until then this binary
// proves the build and says plainly that training is not available yet.
#include <fmt/format.h>

#include <cstdio>

int main(int argc, char** argv) {
  (void)argv;
  fmt::print(stderr,
             "s6 train: the build works, but the trainer (train --config) is not implemented yet; "
             "{} argument(s) ignored.\n",
             argc - 1);
  return 3;
}
