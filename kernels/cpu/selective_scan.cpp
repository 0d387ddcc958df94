// CPU reference selective scan (Mamba S6): forward and backward, OpenMP, deterministic gradients.
#include "kernels/cpu/selective_scan.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace s6::kernels::cpu {

namespace {

// Fixed, thread-count independent partition of the channels for the backward reductions over d:
// every group owns a private dB/dC partial, and partials are summed in group order.
constexpr int64_t kGroups = 16;

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Above 20 softplus(v) == v to within rounding, and exp(v) would start to overflow in float.
template <typename T> inline T delta_to_dt(T v, bool softplus) {
  return (softplus && v <= T(20)) ? std::log1p(std::exp(v)) : v;
}

// The reference reads every pointer as a T and B, C as contiguous rows.
template <typename T> void check_params(const char* what, const ScanParams& p) {
  const ScanDType want = std::is_same_v<T, double> ? ScanDType::Float64 : ScanDType::Float32;
  S6_CHECK(p.dtype == want, "{}: params.dtype {} does not match the instantiation's ({})", what,
           static_cast<int>(p.dtype), static_cast<int>(want));
  S6_CHECK(p.bc_row_stride == 0 || p.bc_row_stride == p.dims.dstate,
           "{}: B and C must be contiguous (bc_row_stride 0), got {}", what, p.bc_row_stride);
}

template <typename T> const T* cptr(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* mptr(void* p) { return static_cast<T*>(p); }

}  // namespace

template <typename T> void selective_scan_fwd(const ScanParams& p) {
  check_params<T>("selective_scan_fwd (CPU)", p);
  const ScanDims& dims = p.dims;
  const bool softplus = p.delta_softplus;
  const T *u = cptr<T>(p.u), *delta = cptr<T>(p.delta), *A = cptr<T>(p.A), *B = cptr<T>(p.B), *C = cptr<T>(p.C),
          *D = cptr<T>(p.D), *z = cptr<T>(p.z), *delta_bias = cptr<T>(p.delta_bias),
          *initial_state = cptr<T>(p.initial_state);
  T* y_out = mptr<T>(p.out);
  T* final_state = mptr<T>(p.final_state);
  const int64_t Bn = dims.batch, L = dims.length, Dm = dims.dim, N = dims.dstate;
  const int64_t rows = Bn * Dm;
  // Threads only pay off on real sizes; tiny test shapes stay serial (no spin-up cost).
#pragma omp parallel if (Bn * L * Dm * N > 32768)
  {
    std::vector<T> h(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / Dm, d = r % Dm;
      const T* Ad = A + d * N;
      if (initial_state) {
        std::copy(initial_state + r * N, initial_state + (r + 1) * N, h.begin());
      } else {
        std::fill(h.begin(), h.end(), T(0));
      }
      const T bias = delta_bias ? delta_bias[d] : T(0);
      const T Dd = D ? D[d] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * Dm + d;
        const T* Bt = B + (b * L + t) * N;
        const T* Ct = C + (b * L + t) * N;
        const T dt = delta_to_dt(delta[i] + bias, softplus);
        const T dtu = dt * u[i];
        T y = T(0);
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * Ad[n]) * h[n] + dtu * Bt[n];
          y += Ct[n] * h[n];
        }
        y += Dd * u[i];
        if (z) y *= z[i] * sigmoid(z[i]);
        y_out[i] = y;
      }
      if (final_state) std::copy(h.begin(), h.end(), final_state + r * N);
    }
  }
}

template <typename T> void selective_scan_bwd(const ScanGradParams& p) {
  check_params<T>("selective_scan_bwd (CPU)", p);
  const ScanDims& dims = p.dims;
  const bool softplus = p.delta_softplus;
  const T *dout = cptr<T>(p.dout), *u = cptr<T>(p.u), *delta = cptr<T>(p.delta), *A = cptr<T>(p.A),
          *B = cptr<T>(p.B), *C = cptr<T>(p.C), *D = cptr<T>(p.D), *z = cptr<T>(p.z),
          *delta_bias = cptr<T>(p.delta_bias), *initial_state = cptr<T>(p.initial_state);
  T *du = mptr<T>(p.du), *ddelta = mptr<T>(p.ddelta), *dA = mptr<T>(p.dA), *dB = mptr<T>(p.dB),
    *dC = mptr<T>(p.dC), *dD = mptr<T>(p.dD), *dz = mptr<T>(p.dz), *ddelta_bias = mptr<T>(p.ddelta_bias);
  const int64_t Bn = dims.batch, L = dims.length, Dm = dims.dim, N = dims.dstate;
  const int64_t G = std::min(kGroups, Dm);
  const int64_t LN = L * N;
  // Per-channel sums (dA, dD, ddelta_bias) are owned by exactly one group and summed over b in
  // order, so they accumulate straight into the outputs; only the sums over d need partials.
  if (dA) std::fill(dA, dA + Dm * N, T(0));
  if (dD) std::fill(dD, dD + Dm, T(0));
  if (ddelta_bias) std::fill(ddelta_bias, ddelta_bias + Dm, T(0));
  std::vector<T> dB_part(dB ? static_cast<size_t>(G * LN) : 0);
  std::vector<T> dC_part(dC ? static_cast<size_t>(G * LN) : 0);

#pragma omp parallel if (Bn * L * Dm * N > 32768)
  {
    std::vector<T> hs(static_cast<size_t>(LN));     // states of one (b, d) row, recomputed
    std::vector<T> abars(static_cast<size_t>(LN));  // exp(dt A) of that row, reused by the reverse pass
    std::vector<T> h0(static_cast<size_t>(N)), dh(static_cast<size_t>(N));
    for (int64_t b = 0; b < Bn; ++b) {
#pragma omp for schedule(static)
      for (int64_t g = 0; g < G; ++g) {
        T* dBp = dB ? dB_part.data() + g * LN : nullptr;
        T* dCp = dC ? dC_part.data() + g * LN : nullptr;
        if (dBp) std::fill(dBp, dBp + LN, T(0));
        if (dCp) std::fill(dCp, dCp + LN, T(0));
        const int64_t d_lo = g * Dm / G, d_hi = (g + 1) * Dm / G;
        for (int64_t d = d_lo; d < d_hi; ++d) {
          const int64_t r = b * Dm + d;
          const T* Ad = A + d * N;
          const T bias = delta_bias ? delta_bias[d] : T(0);
          const T Dd = D ? D[d] : T(0);
          if (initial_state) {
            std::copy(initial_state + r * N, initial_state + (r + 1) * N, h0.begin());
          } else {
            std::fill(h0.begin(), h0.end(), T(0));
          }
          // Forward recompute of this row's states.
          for (int64_t t = 0; t < L; ++t) {
            const int64_t i = (b * L + t) * Dm + d;
            const T* Bt = B + (b * L + t) * N;
            const T dt = delta_to_dt(delta[i] + bias, softplus);
            const T dtu = dt * u[i];
            const T* hp = t > 0 ? &hs[(t - 1) * N] : h0.data();
            T* ht = &hs[t * N];
            T* at = &abars[t * N];
            for (int64_t n = 0; n < N; ++n) {
              at[n] = std::exp(dt * Ad[n]);
              ht[n] = at[n] * hp[n] + dtu * Bt[n];
            }
          }
          // Reverse pass. dh holds Abar_{t+1} * dh_{t+1} on entry to step t.
          std::fill(dh.begin(), dh.end(), T(0));
          T dD_acc = T(0), dbias_acc = T(0);
          for (int64_t t = L - 1; t >= 0; --t) {
            const int64_t i = (b * L + t) * Dm + d;
            const T* Bt = B + (b * L + t) * N;
            const T* Ct = C + (b * L + t) * N;
            const T* ht = &hs[t * N];
            const T* hp = t > 0 ? &hs[(t - 1) * N] : h0.data();
            const T v = delta[i] + bias;
            const T dt = delta_to_dt(v, softplus);
            const T ut = u[i];
            const T g_out = dout[i];
            T gy = g_out;
            if (z) {
              const T zt = z[i], sz = sigmoid(zt);
              gy = g_out * zt * sz;
              if (dz) {
                T y = Dd * ut;
                for (int64_t n = 0; n < N; ++n) y += Ct[n] * ht[n];
                dz[i] = g_out * y * sz * (T(1) + zt * (T(1) - sz));
              }
            }
            T du_acc = Dd * gy, ddt = T(0);
            for (int64_t n = 0; n < N; ++n) {
              const T dhn = dh[n] + Ct[n] * gy;
              const T abar = abars[t * N + n];
              const T a = abar * hp[n];
              du_acc += dhn * Bt[n] * dt;
              ddt += dhn * (Bt[n] * ut + Ad[n] * a);
              if (dA) dA[d * N + n] += dhn * dt * a;
              if (dBp) dBp[t * N + n] += dhn * dt * ut;
              if (dCp) dCp[t * N + n] += gy * ht[n];
              dh[n] = abar * dhn;
            }
            if (du) du[i] = du_acc;
            const T dd = (softplus && v <= T(20)) ? ddt * sigmoid(v) : ddt;
            if (ddelta) ddelta[i] = dd;
            dbias_acc += dd;
            dD_acc += gy * ut;
          }
          if (dD) dD[d] += dD_acc;
          if (ddelta_bias) ddelta_bias[d] += dbias_acc;
        }
      }
      // Implicit barrier above: all partials for this b are complete. Sum them in group order.
      if (dB || dC) {
#pragma omp for schedule(static)
        for (int64_t k = 0; k < LN; ++k) {
          if (dB) {
            T s = T(0);
            for (int64_t g = 0; g < G; ++g) s += dB_part[g * LN + k];
            dB[b * LN + k] = s;
          }
          if (dC) {
            T s = T(0);
            for (int64_t g = 0; g < G; ++g) s += dC_part[g * LN + k];
            dC[b * LN + k] = s;
          }
        }
        // Implicit barrier: partials are free to be zeroed for the next b.
      }
    }
  }
}

template void selective_scan_fwd<float>(const ScanParams&);
template void selective_scan_fwd<double>(const ScanParams&);
template void selective_scan_bwd<float>(const ScanGradParams&);
template void selective_scan_bwd<double>(const ScanGradParams&);

}  // namespace s6::kernels::cpu
