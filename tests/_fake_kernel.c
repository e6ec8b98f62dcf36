/* A CPU-only library exporting the wsp C ABI, built with gcc by tests/_fake_nvcc.py (FAKE_NVCC_MODE=gcc).
 * It lets tests load libraries with ctypes and exercise status handling without nvcc or a GPU:
 *   can_implement: 1 (kErrorMisalignedOperand) when N % 8 != 0, 4 (kErrorInvalidProblem) when M <= 0
 *   workspace_size: 256 * L bytes
 *   run: can_implement's status; else 1000 + 700 (cudaErrorIllegalAddress) when M == 13;
 *        6 (kErrorWorkspaceNull) with too little workspace; else writes alpha*K into D[0] (host memory)
 */
#include "wsp_abi.h"

#ifndef FAKE_ABI_VERSION
#define FAKE_ABI_VERSION WSP_ABI_VERSION
#endif
#ifndef FAKE_KERNEL_NAME
#define FAKE_KERNEL_NAME "fake"
#endif

int wsp_abi_version(void) { return FAKE_ABI_VERSION; }
size_t wsp_args_size(void) { return sizeof(wsp_args); }
const char* wsp_kernel_name(void) { return FAKE_KERNEL_NAME; }

int wsp_can_implement(const wsp_args* a) {
  if (a->M <= 0) return 4;
  if (a->N % 8) return 1;
  return 0;
}

size_t wsp_workspace_size(const wsp_args* a) { return (size_t)256 * (size_t)a->L; }

int wsp_run(const wsp_args* a, void* workspace, size_t workspace_bytes, void* stream) {
  (void)stream;
  int s = wsp_can_implement(a);
  if (s) return s;
  if (a->M == 13) return WSP_CUDA_ERROR_BASE + 700;
  if (workspace == 0 || workspace_bytes < wsp_workspace_size(a)) return 6;
  ((float*)a->D)[0] = a->alpha * (float)a->K + (float)a->ldd + (float)a->batch_stride_D * 0.5f;
  return 0;
}
