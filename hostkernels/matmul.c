/* Matmul: B packed into NR-column panels (bias folded into each panel's first row), then MR x NR
 * register tiles. A weight that never changes is packed once (gp_pack_b) and reused (gp_matmul_packed). */
#include "simd.h"

int gp_abi(void) { return GP_ABI; }

/* Floats a packed K x N matrix takes (the size of the caller's buffer for gp_pack_b). */
int gp_packed_size(int K, int N) { return ((N + NR - 1) / NR) * panel_floats(K); }

/* Pack B for C = A @ B (+ bias): B is K x N row-major, or N x K row-major when transpose_b. */
void gp_pack_b(const float *b, int K, int N, int transpose_b, const float *bias, float *packed) {
  if (transpose_b) pack(b, K, N, 1, K, 1.0f, bias, 1, packed);
  else pack(b, K, N, N, 1, 1.0f, bias, 1, packed);
}

/* C (M x N, row stride ldc) = A (M x K, row stride lda) @ packed. Rows are taken in blocks that keep
 * A's block in L2 while every panel passes over it; each panel stays in L1 across the block's tiles. */
void gp_matmul_packed(const float *a, int M, int K, int lda, const float *packed, int N, float *c, int ldc) {
  int mc = (65536 / (K > 0 ? K : 1)) / MR * MR;
  if (mc < MR) mc = MR;
  for (int m0 = 0; m0 < M; m0 += mc) {
    int rows = min_i(mc, M - m0);
    const float *panel = packed;
    for (int n0 = 0; n0 < N; n0 += NR, panel += panel_floats(K))
      panel_rows(a + m0 * lda, rows, lda, panel, K, c + m0 * ldc + n0, ldc, min_i(NR, N - n0));
  }
}

/* `batch` independent products C[i] = A[i] @ B[i] (+ bias), each B packed into `scratch`
 * (gp_packed_size(K, N) floats) first. Batch strides are in floats. */
void gp_matmul_batched(const float *a, const float *b, const float *bias, float *c, int batch, int M, int K,
                       int N, int transpose_b, int stride_a, int stride_b, int stride_c, float *scratch) {
  for (int i = 0; i < batch; i++) {
    gp_pack_b(b + i * stride_b, K, N, transpose_b, bias, scratch);
    gp_matmul_packed(a + i * stride_a, M, K, K, scratch, N, c + i * stride_c, N);
  }
}
