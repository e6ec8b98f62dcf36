/* cutlass-wsp kernel C ABI. Every generated kernel library exports these functions; Python mirrors
 * `wsp_args` with ctypes (cutlass_wsp/kernels/library.py) and checks wsp_abi_version() and
 * wsp_args_size() on load. Change the struct => bump WSP_ABI_VERSION (it is part of the cache key).
 *
 * Problem: D[l] (M x N) = alpha * A[l] (M x K) . B[l] (K x N) + beta * D[l], l = 0..L-1, all row-major:
 *   A[l][m][k] at A + l*batch_stride_A + m*lda + k
 *   B[l][k][n] at B + l*batch_stride_B + k*ldb + n
 *   D[l][m][n] at D + l*batch_stride_D + m*ldd + n
 * Strides and leading dimensions are in elements. Fields a family does not use are left zero/NULL.
 *
 * Status codes returned by wsp_can_implement and wsp_run:
 *   0                 success
 *   1 .. 999          a cutlass::Status value (e.g. 2 = kErrorMisalignedOperand)
 *   1000 + e          CUDA error e (cudaError_t) from the launch or found pending right after it
 */
#ifndef WSP_ABI_H
#define WSP_ABI_H

#include <stddef.h>
#include <stdint.h>

#define WSP_ABI_VERSION 2
#define WSP_CUDA_ERROR_BASE 1000

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wsp_args {
  /* dense / batched problem */
  int32_t M, N, K, L;
  const void* A;
  const void* B;
  void* D;
  int64_t lda, ldb, ldd;
  int64_t batch_stride_A, batch_stride_B, batch_stride_D;
  float alpha, beta;

  /* fused WSP-C: per-batch K indices into B's rows; batch l uses gather_index + l*index_stride */
  const int32_t* gather_index;
  int64_t index_stride;

  /* grouped (unequal problems), one entry per group */
  int32_t group_count;
  const int32_t* host_problem_sizes;   /* [group_count][3] = m, n, k, on the host */
  void* device_problem_sizes;          /* the same on the device, in the kernel's own layout */
  const void* const* ptr_A;            /* device arrays of group_count pointers */
  const void* const* ptr_B;
  void* const* ptr_D;
  const int64_t* lda_array;            /* device arrays of group_count leading dimensions */
  const int64_t* ldb_array;
  const int64_t* ldd_array;

  /* whole-layer kernels (family 'fused'): NHWC input B[batch, H, W, C], NHWC output D[batch, H, W, n_out],
     the family's compact weights A, and two index tables the family defines */
  int32_t batch, H, W, C, n_out;
  const void* index_a;
  const void* index_b;

  /* launch */
  int32_t sm_count;                    /* <= 0: query the device */
  int32_t device_id;
} wsp_args;

int wsp_abi_version(void);
size_t wsp_args_size(void);            /* sizeof(wsp_args) as compiled: guards against a stale mirror */
const char* wsp_kernel_name(void);
int wsp_can_implement(const wsp_args* args);
size_t wsp_workspace_size(const wsp_args* args);
int wsp_run(const wsp_args* args, void* workspace, size_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* WSP_ABI_H */
