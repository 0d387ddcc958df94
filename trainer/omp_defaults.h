// OpenMP settings for a CPU that other programs share: train's defaults, applied before the
// OpenMP runtime reads its environment.
#pragma once

namespace s6::trainer {

// When neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set (and S6_OMP_DEFAULTS is not 0), sets
// OMP_WAIT_POLICY=passive and executes this program again with the same arguments: libgomp reads
// its environment when it is loaded, before main, so a setenv alone would come too late. Under
// the default policy each thread spins up to 300,000 times at every barrier; beside another busy
// process those spins take the cores that the descheduled thread needs, and a 2-core CPU run was
// 6x-10x slower (docs/performance.md, "A shared CPU"). Passive threads sleep instead. Returns
// normally when nothing needs changing or the exec fails (the run then keeps libgomp's defaults).
void apply_openmp_defaults(char** argv);

}  // namespace s6::trainer
