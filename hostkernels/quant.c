/* Products with quantized weights (qdot.h): Y (M x N, rows ldy apart) = X (M x K) W^T for a Q4_1 or Q8_0 weight
 * W (N x K) as the GGUF stores it. X is quantized to 8-bit blocks first; then each weight row, streamed once,
 * is dotted with every row of X while it sits in L1 (one row for a decode step, the prompt's rows for a
 * prefill). Natively the weight rows are spread over `threads` threads (pool.c). */
#include "simd.h"
#include "qdot.h"

/* Floats of scratch gp_q_matmul needs for M rows of K. */
int gp_q_scratch(int M, int K) { return q_act_floats(M, K); }

/* kind: ggml's type id (3 Q4_1, 8 Q8_0); K a multiple of 32 (the caller checks both). */
void gp_q_matmul(const float *x, int M, int K, const uint8_t *w, int kind, int N, float *y, int ldy,
                 float *scratch, int threads) {
  float *ds = scratch;
  int8_t *q = (int8_t *)(scratch + M * (K / QK) * 2);
  for (int m = 0; m < M; m++) quantize_row(x + m * K, K, q + m * K, ds + m * (K / QK) * 2);
  struct qjob J = {q, ds, M, K, kind, w, w, w, N, 0, 0, y, y, y, ldy, ldy, ldy};
  qjob_run(&J, threads);
}
