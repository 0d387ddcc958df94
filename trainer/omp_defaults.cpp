// train's OpenMP wait policy: passive unless the user chose one (see omp_defaults.h for why).
#include "trainer/omp_defaults.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace s6::trainer {

void apply_openmp_defaults(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;  // the user's choice
  if (const char* off = std::getenv("S6_OMP_DEFAULTS"); off && std::strcmp(off, "0") == 0) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure: keep going with libgomp's defaults
  ::unsetenv("OMP_WAIT_POLICY");
}

}  // namespace s6::trainer
