/* Shared pieces of gpuport's SIMD kernels (see the kernels in matmul.c, rowwise.c, attention.c, encoder.c).
 *
 * Written on clang's generic vectors, so one source builds for WebAssembly (4 lanes: SIMD128, or relaxed
 * SIMD with -mrelaxed-simd) and natively for the CPU that builds it (8 lanes with AVX/AVX2, 16 with
 * AVX-512, 4 elsewhere). The WebAssembly module runs inside Pyodide's own linear memory (it is loaded as
 * an Emscripten side module, whose `env.memory` import is Pyodide's WebAssembly.Memory), so every pointer
 * is the address of a NumPy buffer. It must therefore own nothing in that memory: no static data, no
 * shadow stack (no local arrays whose address escapes, no calls into libc, no vector lane picked by a
 * run-time index). Scratch space comes from the caller. The build checks the compiled module for data
 * segments and stack-pointer imports. The native build keeps these rules, though it could break them
 * harmlessly.
 */
#ifndef GPUPORT_SIMD_H
#define GPUPORT_SIMD_H

#include <stdint.h>

#include "abi.h"

#define INLINE static inline __attribute__((always_inline))

/* Lanes of the matmul tile's vectors: the widest the target runs. */
#if defined(__wasm__)
#define TW 4
#elif defined(__AVX512F__)
#define TW 16
#elif defined(__AVX__)
#define TW 8
#else
#define TW 4
#endif

typedef float vt __attribute__((vector_size(TW * 4)));
typedef float v4 __attribute__((vector_size(16)));

/* Packed B: ceil(N / NR) panels of NR columns, each `(K + 1) * NR` floats: a row of NR bias values
 * (zero without bias), then row k holds B[k, n0 .. n0 + NR). Columns past N are zero. The panel width is
 * two tile vectors (8 columns in WebAssembly, 16 natively with AVX2): gp_packed_size tells callers. */
#define NR (2 * TW)
/* Rows per micro-tile: 4 rows x 2 vectors = 8 accumulators + 2 B vectors + 1 broadcast A value, within
 * the 16 vector registers of x86-64 (and of the engines' WebAssembly there). Measured in Node 20's V8: 4 rows
 * 34 GFLOP/s, 5 or 6 rows 10-22 (spills; MR_WIDE below for the browsers). With AVX-512's 32 registers, 8 rows:
 * 16 accumulators hide the FMA's latency and halve the panel's loads per multiply-add (an Intel Xeon with
 * AVX-512, one thread, interleaved processes: products of 256 rows 97 -> 141 GFLOP/s, MiniLM's 256-token text
 * 97 -> 61 ms, medians of 6). */
#if TW == 16
#define MR 8
#else
#define MR 4
#endif
/* Rows per micro-tile where a panel meets more than 3 * MR rows (an image's 50, a batch's, a long text's): in
 * WebAssembly 6 rows x 2 vectors, 12 accumulators + 2 B vectors + 1 broadcast A value, 15 of the 16. Chromium's and
 * Firefox's engines keep them in registers (Node 20's V8 spilled 5 and 6 rows), and 12 multiply-adds in flight come
 * near the engines' roof where 8 do not: one thread, the two builds side by side in one page, interleaved,
 * GFLOP/s 4 rows -> 6 rows: ViT-B's 800 x 768 x 2304 43.9 -> 49.4 (Chromium) and 44.7 -> 49.6 (Firefox), its pool's
 * column parts 800 x 768 x 384 50.1 -> 53.9 and 49.1 -> 52.3, one image's 50 rows 45.6 -> 49.5 and 43.4 -> 46.5
 * (bench/roof.c's loop: 57 on one thread in both). A text's 7 rows lost as 6 + 1 (44.9 -> 38.7): up to 3 * MR rows
 * keep MR-row tiles. Each output's sum keeps its order either way: the same numbers to the bit. */
#if defined(__wasm__)
#define MR_WIDE 6
#else
#define MR_WIDE MR
#endif

INLINE int min_i(int a, int b) { return a < b ? a : b; }
INLINE int max_i(int a, int b) { return a > b ? a : b; }
INLINE int panel_floats(int K) { return (K + 1) * NR; }

INLINE vt ld(const float *p) {
  vt v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
INLINE void st(float *p, vt v) { __builtin_memcpy(p, &v, sizeof v); }
/* s - 0 is s for every s (-0 included), so this folds to a broadcast; 0 + s would cost an add. */
INLINE vt splat(float s) { return s - (vt){}; }
INLINE v4 ld4(const float *p) {
  v4 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
INLINE void st4(float *p, v4 v) { __builtin_memcpy(p, &v, sizeof v); }

/* `w` (1..NR) columns of one output row: whole vectors, then lane by lane (constant lanes: the loops
 * unroll). */
INLINE void st_row(float *c, vt lo, vt hi, int w) {
  if (w == NR) {
    st(c, lo);
    st(c + TW, hi);
    return;
  }
  for (int j = 0; j < TW; j++)
    if (j < w) c[j] = lo[j];
  for (int j = 0; j < TW; j++)
    if (TW + j < w) c[TW + j] = hi[j];
}

/* acc + a * b: one fused multiply-add where the target has it (relaxed SIMD's f32x4.relaxed_madd, an FMA
 * on x86-64 with FMA3 and on arm64; natively the compiler contracts it), a multiply and an add otherwise. */
#ifdef __wasm_relaxed_simd__
INLINE vt madd(vt a, vt b, vt acc) { return __builtin_wasm_relaxed_madd_f32x4(a, b, acc); }
#else
INLINE vt madd(vt a, vt b, vt acc) { return a * b + acc; }
#endif

/* One row of a tile: acc += broadcast(A[r, k]) * the panel row's two vectors. */
#define TILE_ROW(r, lo, hi)                                         \
  do {                                                              \
    vt av = splat(a[(r) * lda + k]);                                \
    lo = madd(av, b0, lo);                                          \
    hi = madd(av, b1, hi);                                          \
  } while (0)

/* C[0..rows, 0..w) = bias + A[0..rows, 0..K) @ panel over k in [k0, k1): from the panel's bias row where k0 is 0,
 * else from C's full rows (w == NR), which the range before left there. `rows` (1..MR_WIDE) is a compile-time
 * constant once inlined: the dead rows fold away and the accumulators are named scalars, so they live in registers
 * (an array of them ended up on the shadow stack). A rows are `lda` floats apart, C rows `ldc`. */
INLINE void tile(const int rows, const float *a, int lda, const float *panel, int k0, int k1, float *c, int ldc,
                 int w) {
  vt b0 = ld(panel), b1 = ld(panel + TW);
  vt c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1, c30 = b0, c31 = b1;
  vt c40 = b0, c41 = b1, c50 = b0, c51 = b1, c60 = b0, c61 = b1, c70 = b0, c71 = b1;
  if (k0 > 0) {
    c00 = ld(c), c01 = ld(c + TW);
    if (rows > 1) c10 = ld(c + ldc), c11 = ld(c + ldc + TW);
    if (rows > 2) c20 = ld(c + 2 * ldc), c21 = ld(c + 2 * ldc + TW);
    if (rows > 3) c30 = ld(c + 3 * ldc), c31 = ld(c + 3 * ldc + TW);
    if (rows > 4) c40 = ld(c + 4 * ldc), c41 = ld(c + 4 * ldc + TW);
    if (rows > 5) c50 = ld(c + 5 * ldc), c51 = ld(c + 5 * ldc + TW);
    if (rows > 6) c60 = ld(c + 6 * ldc), c61 = ld(c + 6 * ldc + TW);
    if (rows > 7) c70 = ld(c + 7 * ldc), c71 = ld(c + 7 * ldc + TW);
  }
  const float *bp = panel + NR + k0 * NR;
  for (int k = k0; k < k1; k++, bp += NR) {
    b0 = ld(bp);
    b1 = ld(bp + TW);
    TILE_ROW(0, c00, c01);
    if (rows > 1) TILE_ROW(1, c10, c11);
    if (rows > 2) TILE_ROW(2, c20, c21);
    if (rows > 3) TILE_ROW(3, c30, c31);
    if (rows > 4) TILE_ROW(4, c40, c41);
    if (rows > 5) TILE_ROW(5, c50, c51);
    if (rows > 6) TILE_ROW(6, c60, c61);
    if (rows > 7) TILE_ROW(7, c70, c71);
  }
  st_row(c, c00, c01, w);
  if (rows > 1) st_row(c + ldc, c10, c11, w);
  if (rows > 2) st_row(c + 2 * ldc, c20, c21, w);
  if (rows > 3) st_row(c + 3 * ldc, c30, c31, w);
  if (rows > 4) st_row(c + 4 * ldc, c40, c41, w);
  if (rows > 5) st_row(c + 5 * ldc, c50, c51, w);
  if (rows > 6) st_row(c + 6 * ldc, c60, c61, w);
  if (rows > 7) st_row(c + 7 * ldc, c70, c71, w);
}

/* k steps a chunk where two or three tiles share a panel (5..12 rows: a sentence, a short text): every tile takes a
 * chunk in turn, so the panel comes from memory in one steady stream, where tile after tile over the whole panel
 * left the stream idle while the later tiles reread it from L1. Each output's sum keeps its order: the same numbers,
 * to the bit. Node's V8, one thread, 24 products of 512 x 1536 streamed from memory, GFLOP/s before / after: 5 rows
 * 24.9 / 36.8, 7 rows 33.3 / 42.4, 8 rows 37.6 / 43.6, 12 rows 39.7 / 45.5; 16 rows 43.7 / 41.6 (so not past 12),
 * chunks of 64 and more gained less. Natively (AVX-512 here) chunks cost: MiniLM's sentence 1.39 -> 1.62 ms. */
#define KC 32
#if defined(__wasm__)
#define CHUNKED 1
#else
#define CHUNKED 0
#endif

/* A's rows [0, M) (MR_WIDE-row tiles past 3 * MR rows, then MR-row tiles, then the 1..MR-1 left) against one panel
 * over k in [k0, k1). */
INLINE void panel_tiles(const float *a, int M, int lda, const float *panel, int k0, int k1, float *c, int ldc,
                        int w) {
  int m = 0;
  if (MR_WIDE != MR && M > 3 * MR)
    for (; m + MR_WIDE <= M; m += MR_WIDE) tile(MR_WIDE, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w);
  for (; m + MR <= M; m += MR) tile(MR, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w);
  switch (M - m) {
    case 1: tile(1, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
    case 2: tile(2, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
    case 3: tile(3, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
#if MR > 4
    case 4: tile(4, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
    case 5: tile(5, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
    case 6: tile(6, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
    case 7: tile(7, a + m * lda, lda, panel, k0, k1, c + m * ldc, ldc, w); break;
#endif
    default: break;
  }
}

/* All rows of A against one panel: in chunks of k where CHUNKED says so, else each tile over all of k. */
INLINE void panel_rows(const float *a, int M, int lda, const float *panel, int K, float *c, int ldc, int w) {
  if (CHUNKED && w == NR && M > MR && M <= 3 * MR && K > KC) {
    for (int k0 = 0; k0 < K; k0 += KC) panel_tiles(a, M, lda, panel, k0, min_i(K, k0 + KC), c, ldc, w);
  } else {
    panel_tiles(a, M, lda, panel, 0, K, c, ldc, w);
  }
}

/* WebAssembly has no prefetch instruction and a page's memory no huge pages, so the hardware's prefetchers, which
 * stop at every 4 KiB page, can leave a weight streamed from memory to arrive line by line as the tiles ask for it.
 * touch() reads one float of each cache line of the `n` floats at p, up to `end`: loads whose values nobody waits
 * for, so those lines are on their way while the tiles work on the lines before them. matmul.c touches the next
 * panel's k block once per block (products past 3 * MR rows): ViT-B's 50 rows in Chromium 97.6-102.2 -> 93.9-100.6 ms
 * (an Intel Xeon, two threads); on an AMD EPYC, one thread, builds side by side in one page, interleaved: 50 rows
 * 26.3 -> 23.5 ms (Firefox 27.6 -> 25.0), 96 rows 33.1 -> 31.3, 200 rows 91.5 -> 89.1.
 * A sentence's or a text's rows (up to 3 * MR, k in chunks: panel_rows) are not touched ahead. Touching every chunk
 * there made a Xeon's two-thread CLIP text faster (Chromium 13.9-14.0 -> 11.3-11.7 ms), but on the AMD EPYC it made
 * every such product slower, from cache as from memory (one thread, the two builds side by side in one page,
 * interleaved, medians of 40: MiniLM's six layers' products on 7 rows 3.4 -> 5.0-5.7 ms, on 12 rows 6.6-6.9 ->
 * 9.0-10.0; one layer's, 7 MB, 0.52 -> 0.68; CLIP's text tower on 7 rows 13.1-13.7 -> 19.3-23.2 in Chromium and
 * Firefox). Why was not measured (loads, unlike a prefetch, retire in order, and a smaller out-of-order window may
 * fill with them). The loss outweighed the gain, and the page cannot tell the CPUs apart. Natively the CPU's
 * prefetchers and NumPy's huge pages do this. */
INLINE void touch(const float *p, int n, const float *end) {
#if defined(__wasm__)
  if (p + n > end) n = (int)(end - p);
  for (int i = 0; i < n; i += 64 / (int)sizeof(float)) (void)*(volatile const float *)(p + i);
#else
  (void)p, (void)n, (void)end;
#endif
}

/* A parallel-for: fn(ctx, lo, hi, slot) for `parts` near-equal parts of 0..total, on up to `threads`
 * threads natively and in the threaded WebAssembly build (pool.c); `slot` (0 .. threads - 1) names the
 * thread, for per-thread scratch. Where it runs alone (one thread, no workers, the pool busy) it is one call
 * for the whole range; in the one-thread WebAssembly builds (linked into Pyodide's heap) a direct call the
 * compiler inlines: a context passed through a function pointer would need a shadow stack. */
typedef void (*gp_part_fn)(void *ctx, int lo, int hi, int slot);
#if defined(__wasm__) && !defined(__wasm_atomics__)
#define gp_parallel(threads, total, parts, fn, ctx) ((void)(threads), (void)(parts), fn((ctx), 0, (total), 0))
#else
void gp_parallel(int threads, int total, int parts, gp_part_fn fn, void *ctx);
#endif

/* Called across files but not exported (abi.h declares the exports): rowwise.c's layer norm with a
 * residual, for encoder.c. */
int add_layer_norm(const float *x, const float *res, const float *gamma, const float *beta, float *y, int rows,
                   int n, float eps);


/* 4 rows of 4 floats -> 4 columns: t_i = (r0[i], r1[i], r2[i], r3[i]). */
#define TRANSPOSE4(r0, r1, r2, r3)                                  \
  do {                                                              \
    v4 lo01 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5);          \
    v4 hi01 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);          \
    v4 lo23 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5);          \
    v4 hi23 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);          \
    r0 = __builtin_shufflevector(lo01, lo23, 0, 1, 4, 5);           \
    r1 = __builtin_shufflevector(lo01, lo23, 2, 3, 6, 7);           \
    r2 = __builtin_shufflevector(hi01, hi23, 0, 1, 4, 5);           \
    r3 = __builtin_shufflevector(hi01, hi23, 2, 3, 6, 7);           \
  } while (0)

/* One full panel from NR rows of length K (`stride` floats apart) holding its columns, i.e. B stored
 * transposed: per 4 values of k, each group of 4 rows is a 4 x 4 block transposed in registers; then the
 * K % 4 leftover rows one by one. */
INLINE void pack_rows(const float *bt, int K, int stride, float scale, float *dst) {
  int k = 0;
  for (; k + 4 <= K; k += 4, dst += 4 * NR) {
    for (int g = 0; g < NR; g += 4) {
      const float *p = bt + g * stride + k;
      v4 r0 = ld4(p), r1 = ld4(p + stride), r2 = ld4(p + 2 * stride), r3 = ld4(p + 3 * stride);
      TRANSPOSE4(r0, r1, r2, r3);
      st4(dst + g, r0 * scale);
      st4(dst + NR + g, r1 * scale);
      st4(dst + 2 * NR + g, r2 * scale);
      st4(dst + 3 * NR + g, r3 * scale);
    }
  }
  for (; k < K; k++, dst += NR)
    for (int j = 0; j < NR; j++) dst[j] = bt[j * stride + k] * scale;
}

/* Pack B (element (k, n) at b[k * sk + n * sn]) times `scale`, with an optional bias row (bias[n * sbias];
 * NULL for zeros), into panels at `out` (layout above). */
INLINE void pack(const float *b, int K, int N, int sk, int sn, float scale, const float *bias, int sbias,
                 float *out) {
  for (int n0 = 0; n0 < N; n0 += NR, out += panel_floats(K)) {
    int w = min_i(NR, N - n0);
    for (int j = 0; j < NR; j++) out[j] = (bias && j < w) ? bias[(n0 + j) * sbias] : 0.0f;
    float *dst = out + NR;
    if (w == NR && sk == 1) {
      pack_rows(b + n0 * sn, K, sn, scale, dst);
    } else if (w == NR && sn == 1) {
      const float *src = b + n0;
      for (int k = 0; k < K; k++, dst += NR, src += sk) {
        st(dst, ld(src) * scale);
        st(dst + TW, ld(src + TW) * scale);
      }
    } else {
      for (int k = 0; k < K; k++, dst += NR)
        for (int j = 0; j < NR; j++) dst[j] = j < w ? b[k * sk + (n0 + j) * sn] * scale : 0.0f;
    }
  }
}

#endif
