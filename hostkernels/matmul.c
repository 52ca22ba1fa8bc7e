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

/* k in near-equal blocks of at most KB steps: a panel's block (KB x NR floats: 24 KiB with AVX-512, 6 KiB in
 * WebAssembly) stays in L1 across the row block's tiles, and the row block (mc x kb floats of A, 256 KiB at most) in
 * L2, so a weight streams from memory once per row block. Before, a row block was mc x K of A (40 rows where K is
 * 1536, 20 where it is 3072), and a weight larger than L2 streamed again for each: MiniLM's six layers' products on
 * 256 rows, one thread of an Intel Xeon with AVX-512, interleaved: 125-141 -> 142-150 GFLOP/s (the same shapes one
 * weight at a time, from cache: 173, before and after). Each output's sum keeps its order (a tile reloads its partial
 * sums from C), so the numbers are the same to the bit. A tile reloads whole rows, so a last panel narrower than NR
 * runs over all of k at once. Up to 3 * MR rows (a sentence, a text) B streams once anyway, and there WebAssembly's
 * tiles take k in chunks together (panel_rows); in WebAssembly a k block touches the next panel's lines ahead (touch,
 * simd.h).
 *
 * A row block runs through all of k before the next begins. Where C is larger than L2 (2 MiB here), a row block has
 * at most CB / N rows (64 or more), so that its partial sums (rows x N floats, 512 KiB) stay in L2 from one k block
 * to the next: taken k block by k block over all rows, a wide product's C (ViT-B's 800 rows x 3072: 9.4 MiB) came
 * back from L3 at each k block and each tile waited for its sums. ViT-B's products on 800 rows, one thread of an
 * Intel Xeon with AVX-512, interleaved, GFLOP/s: 768 x 2304 125-134 -> 133-139, 768 x 3072 118-124 -> 134-136,
 * 3072 x 768 128-130 -> 138-140 (MiniLM's, Whisper's and 50 rows unchanged); its image tower on 16 images
 * 1083-1109 -> 981-1029 ms. In WebAssembly (Node's V8, relaxed SIMD) the same whole products: 768 x 2304
 * 35.5-37 -> 42.4-43.7, 768 x 3072 35.4-36.9 -> 38.9-39.5; a page's pool splits them by columns (encoder.c), into
 * parts too narrow for the cap. */
#define KB 192
#define CB 131072

/* C (M x N, row stride ldc) = A (M x K, row stride lda) @ packed. */
void gp_matmul_packed(const float *a, int M, int K, int lda, const float *packed, int N, float *c, int ldc) {
  const int blocks = K > KB && M > 3 * MR ? (K + KB - 1) / KB : 1, kb = (K + blocks - 1) / blocks;
  const float *end = packed + (long)((N + NR - 1) / NR) * panel_floats(K);
  int mc = 65536 / (kb > 0 ? kb : 1);
  if (blocks > 1 && (long)M * N > 4 * CB) mc = min_i(mc, max_i(CB / N, 64));
  mc = mc / MR_WIDE * MR_WIDE;
  if (mc < MR_WIDE) mc = MR_WIDE;
  for (int m0 = 0; m0 < M; m0 += mc) {
    const int rows = min_i(mc, M - m0);
    for (int block = 0; block < blocks; block++) {
      const int k0 = block * kb, k1 = min_i(K, k0 + kb);
      const float *panel = packed;
      for (int n0 = 0; n0 < N; n0 += NR, panel += panel_floats(K)) {
        const int w = min_i(NR, N - n0);
        if (blocks == 1) {
          panel_rows(a + m0 * lda, rows, lda, panel, K, c + m0 * ldc + n0, ldc, w);
        } else if (w == NR) {
          if (m0 == 0)   /* the next panel's block, on its way while this one's tiles work */
            touch(panel + panel_floats(K) + NR + k0 * NR, (k1 - k0) * NR, end);
          panel_tiles(a + m0 * lda, rows, lda, panel, k0, k1, c + m0 * ldc + n0, ldc, w);
        } else if (k0 == 0) {
          panel_tiles(a + m0 * lda, rows, lda, panel, 0, K, c + m0 * ldc + n0, ldc, w);
        }
      }
    }
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
