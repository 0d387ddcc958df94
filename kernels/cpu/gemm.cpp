// BLAS gemm via the Fortran interface (any BLAS provides it): row-major C = op(A) op(B) is
// column-major C^T = op(B)^T op(A)^T, so the operands swap places.
#include "kernels/cpu/gemm.h"

#include <climits>

#include "core/error.h"

#ifdef S6_HAVE_BLAS
// OpenBLAS only: present when the linked BLAS is OpenBLAS, null otherwise.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

#endif

namespace s6::kernels::cpu {

namespace {
#ifdef S6_HAVE_BLAS
void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
               const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
               const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
               const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
               const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#else
// Fallback for machines without a BLAS (the GPU image): column-major, OpenMP over columns of C.
// Correct and deterministic, not fast; the CPU build always links a real BLAS.
template <typename T> void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                                     const T* alpha, const T* a, const int* lda, const T* b, const int* ldb,
                                     const T* beta, T* c, const int* ldc) {
  const bool tra = *ta == 'T', trb = *tb == 'T';
#pragma omp parallel for if (static_cast <int64_t>(*m) * *n * *k > 65536)
  for (int j = 0; j < *n; ++j) {
    for (int i = 0; i < *m; ++i) {
      T acc = 0;
      for (int p = 0; p < *k; ++p) {
        T av = tra ? a[p + static_cast<int64_t>(i) * *lda] : a[i + static_cast<int64_t>(p) * *lda];
        T bv = trb ? b[j + static_cast<int64_t>(p) * *ldb] : b[p + static_cast<int64_t>(j) * *ldb];
        acc += av * bv;
      }
      T& out = c[i + static_cast<int64_t>(j) * *ldc];
      out = *alpha * acc + (*beta == T(0) ? T(0) : *beta * out);
    }
  }
}
#endif
}  // namespace

template <typename T> void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                                const T* A, const T* B, T beta, T* C) {
  S6_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX, "gemm: dims {}x{}x{} exceed the 32-bit BLAS interface",
           m, n, k);
  if (m == 0 || n == 0) return;
#ifdef S6_HAVE_BLAS
  // The ops parallelize with OpenMP; OpenBLAS's own thread pool then fights OpenMP's spinning
  // workers for the same cores (copying_cpu on 2 cores: 70 -> 30 ms/step with one BLAS thread).
  static const bool single_threaded = [] {
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded;
#endif
  int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (k == 0) {
    for (int64_t i = 0; i < m * n; ++i) C[i] = beta == T(0) ? T(0) : beta * C[i];
    return;
  }
  // Column-major view: C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
  const char tb = trans_b ? 'T' : 'N';
  const char ta = trans_a ? 'T' : 'N';
  int ldb = trans_b ? ki : ni;
  int lda = trans_a ? mi : ki;
  int ldc = ni;
  blas_gemm(&tb, &ta, &ni, &mi, &ki, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, const float*, float,
                          float*);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, const double*, double,
                           double*);

}  // namespace s6::kernels::cpu
