// CUDA linear: row-major products mapped onto column-major cuBLASLt calls (C^T = B^T A^T), with
// CUBLAS_COMPUTE_32F (never TF32), the bias fused as an epilogue, and a cublasGemmEx fallback when
// cuBLASLt offers no algorithm for a shape/alignment. Handles and workspace are per thread+device.
#include "kernels/cuda/linear.h"

#include <cublasLt.h>
#include <cublas_v2.h>

#include <unordered_map>

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

constexpr int64_t kWorkspaceBytes = 32LL << 20;

#define S6_CUBLAS(expr)                                                                                       \
  do {                                                                                                        \
    cublasStatus_t st_ = (expr);                                                                              \
    S6_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS call {} failed: status {}", #expr, static_cast<int>(st_)); \
  } while (0)

struct Handles {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;  // from the caching allocator; kept for the thread's lifetime
};

Handles& handles() {
  thread_local std::unordered_map<int, Handles> per_device;
  int device = 0;
  cudaGetDevice(&device);
  Handles& h = per_device[device];
  if (!h.lt) {
    S6_CUBLAS(cublasLtCreate(&h.lt));
    S6_CUBLAS(cublasCreate(&h.blas));
    // Default math with CUBLAS_COMPUTE_32F: full fp32 products (TF32 needs an explicit opt-in).
    S6_CUBLAS(cublasSetMathMode(h.blas, CUBLAS_DEFAULT_MATH));
    h.workspace = s6::cuda::allocate(kWorkspaceBytes);
  }
  return h;
}

template <typename T> cudaDataType_t cuda_type();
template <> cudaDataType_t cuda_type<float>() { return CUDA_R_32F; }
template <> cudaDataType_t cuda_type<BFloat16>() { return CUDA_R_16BF; }

uint32_t alignment_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align >>= 1;
  return align;
}

template <typename T> __global__ void fill_bias_kernel(T* c, const T* bias, int64_t rows, int64_t cols) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols;
       i += (int64_t)gridDim.x * blockDim.x)
    c[i] = bias ? bias[i % cols] : T(0.f);
}

// Row-major C (m, n) = op(A) (m, k) op(B) (k, n) [+ bias over columns] [+ C when accumulate]. A
// is (m, k), or (k, m) when trans_a; B is (k, n), or (n, k) when trans_b. lda / ldb: the row
// strides of A and B as stored (0: their row length, i.e. contiguous).
template <typename T> void gemm_rm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* A,
                                   const T* B, const T* bias, T* C, cudaStream_t stream,
                                   bool accumulate = false, int64_t lda = 0, int64_t ldb = 0) {
  S6_CHECK(!(accumulate && bias), "linear: a bias cannot be added into an accumulated product");
  if (m == 0 || n == 0) return;
  if (k == 0 && accumulate) return;
  if (k == 0) {
    fill_bias_kernel<<<blocks_for(m * n, 256), 256, 0, stream>>>(dev(C), dev(bias), m, n);
    check_launch("linear (k = 0)");
    return;
  }
  S6_CHECK(m < (1LL << 31) && n < (1LL << 31) && k < (1LL << 31),
           "linear: sizes ({}, {}, {}) exceed the int32 range of cuBLAS", m, n, k);
  Handles& h = handles();
  const cudaDataType_t type = cuda_type<T>();
  // Column-major: C^T (n x m, ld n) = opB' (n x k) * opA' (k x m).
  const cublasOperation_t op1 = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // first operand: B
  const cublasOperation_t op2 = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // second operand: A
  const int64_t ld1 = ldb ? ldb : trans_b ? k : n, ld2 = lda ? lda : trans_a ? m : k;
  S6_CHECK(ld1 < (1LL << 31) && ld2 < (1LL << 31), "linear: row stride exceeds the int32 range");
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;

  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t l1 = nullptr, l2 = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  bool done = false;
  S6_CUBLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  S6_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op1, sizeof(op1)));
  S6_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op2, sizeof(op2)));
  if (bias) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const void* bp = bias;
    S6_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    S6_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    cudaDataType_t bt = type;
    S6_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  S6_CUBLAS(cublasLtMatrixLayoutCreate(&l1, type, op1 == CUBLAS_OP_N ? n : k, op1 == CUBLAS_OP_N ? k : n, ld1));
  S6_CUBLAS(cublasLtMatrixLayoutCreate(&l2, type, op2 == CUBLAS_OP_N ? k : m, op2 == CUBLAS_OP_N ? m : k, ld2));
  S6_CUBLAS(cublasLtMatrixLayoutCreate(&lc, type, n, m, n));
  S6_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = kWorkspaceBytes;
  S6_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  uint32_t a1 = alignment_of(B), a2 = alignment_of(A), ac = alignment_of(C);
  S6_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a1, sizeof(a1)));
  S6_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a2, sizeof(a2)));
  S6_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)));
  S6_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  bool bias_ok = !bias || alignment_of(bias) >= 16;
  if (bias_ok &&
      cublasLtMatmulAlgoGetHeuristic(h.lt, desc, l1, l2, lc, lc, pref, 1, &heur, &found) ==
          CUBLAS_STATUS_SUCCESS &&
      found > 0) {
    done = cublasLtMatmul(h.lt, desc, &alpha, dev(B), l1, dev(A), l2, &beta, dev(C), lc, dev(C), lc, &heur.algo,
                          h.workspace, kWorkspaceBytes, stream) == CUBLAS_STATUS_SUCCESS;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatrixLayoutDestroy(l2);
  cublasLtMatrixLayoutDestroy(l1);
  cublasLtMatmulDescDestroy(desc);
  if (!done) {  // fallback: bias pre-filled, then C = A B + 1 * C
    const float beta1 = bias || accumulate ? 1.f : 0.f;
    if (bias) {
      fill_bias_kernel<<<blocks_for(m * n, 256), 256, 0, stream>>>(dev(C), dev(bias), m, n);
      check_launch("linear bias fill");
    }
    S6_CUBLAS(cublasSetStream(h.blas, stream));
    // Our workspace, not cuBLAS's own allocation: required for CUDA-graph capture.
    S6_CUBLAS(cublasSetWorkspace(h.blas, h.workspace, kWorkspaceBytes));
    S6_CUBLAS(cublasGemmEx(h.blas, op1, op2, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                           &alpha, B, type, static_cast<int>(ld1), A, type, static_cast<int>(ld2), &beta1, C,
                           type, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  check_launch("linear gemm");
}

}  // namespace

template <typename T> void linear_fwd(T* y, const T* x, const T* w, const T* bias, int64_t rows, int64_t in,
                                      int64_t out, void* stream, int64_t ldx) {
  S6_CHECK(rows >= 0 && in >= 0 && out >= 0, "linear_fwd: bad sizes ({}, {}, {})", rows, in, out);
  gemm_rm<T>(false, true, rows, out, in, x, w, bias, y, as_stream(stream), false, ldx);
}

template <typename T> void linear_bwd_input(T* dx, const T* dy, const T* w, int64_t rows, int64_t in,
                                            int64_t out, void* stream, bool accumulate) {
  S6_CHECK(rows >= 0 && in >= 0 && out >= 0, "linear_bwd_input: bad sizes ({}, {}, {})", rows, in, out);
  gemm_rm<T>(false, false, rows, in, out, dy, w, nullptr, dx, as_stream(stream), accumulate);
}

template <typename T> void linear_bwd_weight(T* dw, const T* dy, const T* x, int64_t rows, int64_t in,
                                             int64_t out, void* stream, int64_t ldx) {
  S6_CHECK(rows >= 0 && in >= 0 && out >= 0, "linear_bwd_weight: bad sizes ({}, {}, {})", rows, in, out);
  gemm_rm<T>(true, false, out, in, rows, dy, x, nullptr, dw, as_stream(stream), false, 0, ldx);
}

#define S6_INSTANTIATE(T)                                                                                   \
  template void linear_fwd<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, void*, int64_t); \
  template void linear_bwd_input<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, void*, bool);        \
  template void linear_bwd_weight<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, void*, int64_t);
S6_INSTANTIATE(float)
S6_INSTANTIATE(BFloat16)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
