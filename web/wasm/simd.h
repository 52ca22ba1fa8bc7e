/* Shared pieces of gpuport's WebAssembly SIMD128 kernels (see kernels in matmul.c, rowwise.c, attention.c).
 *
 * The module runs inside Pyodide's own linear memory (it is loaded as an Emscripten side module, whose
 * `env.memory` import is Pyodide's WebAssembly.Memory), so every pointer is the address of a NumPy
 * buffer. It must therefore own nothing in that memory: no static data, no shadow stack (no local
 * arrays whose address escapes, no calls into libc). Scratch space comes from the caller. The build
 * checks the compiled module for data segments and stack-pointer imports. The native build of the same
 * sources (simd128_native.h) keeps these rules, though a native library could break them harmlessly.
 */
#ifndef GPUPORT_SIMD_H
#define GPUPORT_SIMD_H

#ifdef __wasm__
#include <wasm_simd128.h>
#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#else
/* The native build (.cache/native/libgpuport_simd.so, gpuport.native_kernels): the same sources on
 * clang's generic vectors; the exports are the ELF symbols of the same names (built -fvisibility=hidden). */
#include "simd128_native.h"
#define EXPORT(name) __attribute__((visibility("default")))
#endif
#define INLINE static inline __attribute__((always_inline))

typedef v128_t f4;

/* Bumped whenever an exported signature changes; the Python wrapper refuses a module with another. */
#define GP_ABI 2

/* Packed B: ceil(N / NR) panels of NR columns, each `(K + 1) * NR` floats: a row of NR bias values
 * (zero without bias), then row k holds B[k, n0 .. n0 + NR). Columns past N are zero. */
#define NR 8
/* Rows per micro-tile: 4 rows x 8 columns = 8 f32x4 accumulators + 2 B vectors + 1 broadcast A value,
 * within the 16 vector registers x86-64 engines give WebAssembly. Measured in V8: 4 rows 34 GFLOP/s,
 * 5 or 6 rows 10-22 (spills). */
#ifndef MR
#define MR 4
#endif

INLINE int min_i(int a, int b) { return a < b ? a : b; }
INLINE int panel_floats(int K) { return (K + 1) * NR; }
INLINE f4 splat(float v) { return wasm_f32x4_splat(v); }
INLINE f4 ld(const float *p) { return wasm_v128_load(p); }
INLINE void st(float *p, f4 v) { wasm_v128_store(p, v); }

/* The first `w` (< 4) lanes of v to p. */
INLINE void st_part(float *p, f4 v, int w) {
  if (w > 0) wasm_v128_store32_lane(p, v, 0);
  if (w > 1) wasm_v128_store32_lane(p + 1, v, 1);
  if (w > 2) wasm_v128_store32_lane(p + 2, v, 2);
}

/* `w` (1..8) columns of one output row. */
INLINE void st_row(float *c, f4 lo, f4 hi, int w) {
  if (w == NR) {
    st(c, lo);
    st(c + 4, hi);
  } else if (w >= 4) {
    st(c, lo);
    st_part(c + 4, hi, w - 4);
  } else {
    st_part(c, lo, w);
  }
}

/* acc + a * b: one fused multiply-add where the engine has relaxed SIMD (f32x4.relaxed_madd, an FMA on
 * x86-64 with FMA3 and on arm64), a multiply and an add otherwise. */
#ifdef __wasm_relaxed_simd__
INLINE f4 madd(f4 a, f4 b, f4 acc) { return wasm_f32x4_relaxed_madd(a, b, acc); }
#else
INLINE f4 madd(f4 a, f4 b, f4 acc) { return wasm_f32x4_add(acc, wasm_f32x4_mul(a, b)); }
#endif

/* One row of a tile: acc += broadcast(A[r, k]) * the panel row's two vectors. */
#define TILE_ROW(r, lo, hi)                                         \
  do {                                                              \
    f4 av = wasm_v128_load32_splat(a + (r) * lda + k);              \
    lo = madd(av, b0, lo);                                          \
    hi = madd(av, b1, hi);                                          \
  } while (0)

/* C[0..rows, 0..w) = bias + A[0..rows, 0..K) @ panel, with `rows` (1..MR) a compile-time constant once
 * inlined: the dead rows fold away and the accumulators are named scalars, so they live in registers
 * (an array of them ended up on the shadow stack). A rows are `lda` floats apart, C rows `ldc`. */
INLINE void tile(const int rows, const float *a, int lda, const float *panel, int K, float *c, int ldc,
                 int w) {
  f4 b0 = ld(panel), b1 = ld(panel + 4);
  f4 c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1, c30 = b0, c31 = b1;
  f4 c40 = b0, c41 = b1, c50 = b0, c51 = b1;
  const float *bp = panel + NR;
  for (int k = 0; k < K; k++, bp += NR) {
    b0 = ld(bp);
    b1 = ld(bp + 4);
    TILE_ROW(0, c00, c01);
    if (rows > 1) TILE_ROW(1, c10, c11);
    if (rows > 2) TILE_ROW(2, c20, c21);
    if (rows > 3) TILE_ROW(3, c30, c31);
    if (rows > 4) TILE_ROW(4, c40, c41);
    if (rows > 5) TILE_ROW(5, c50, c51);
  }
  st_row(c, c00, c01, w);
  if (rows > 1) st_row(c + ldc, c10, c11, w);
  if (rows > 2) st_row(c + 2 * ldc, c20, c21, w);
  if (rows > 3) st_row(c + 3 * ldc, c30, c31, w);
  if (rows > 4) st_row(c + 4 * ldc, c40, c41, w);
  if (rows > 5) st_row(c + 5 * ldc, c50, c51, w);
}

/* All rows of A against one panel: MR-row tiles, then the 1..MR-1 leftover rows. */
INLINE void panel_rows(const float *a, int M, int lda, const float *panel, int K, float *c, int ldc, int w) {
  int m = 0;
  for (; m + MR <= M; m += MR) tile(MR, a + m * lda, lda, panel, K, c + m * ldc, ldc, w);
  switch (M - m) {
    case 1: tile(1, a + m * lda, lda, panel, K, c + m * ldc, ldc, w); break;
    case 2: tile(2, a + m * lda, lda, panel, K, c + m * ldc, ldc, w); break;
    case 3: tile(3, a + m * lda, lda, panel, K, c + m * ldc, ldc, w); break;
    case 4: tile(4, a + m * lda, lda, panel, K, c + m * ldc, ldc, w); break;
    case 5: tile(5, a + m * lda, lda, panel, K, c + m * ldc, ldc, w); break;
    default: break;
  }
}

/* Kernels one file's code calls in another's (see each definition). */
void gp_softmax(const float *x, const float *mask, float *y, int rows, int n, int mask_div, int mask_mod);
void gp_gelu(const float *x, float *y, int n);
int add_layer_norm(const float *x, const float *res, const float *gamma, const float *beta, float *y, int rows,
                   int n, float eps);
void gp_matmul_packed(const float *a, int M, int K, int lda, const float *packed, int N, float *c, int ldc);
int gp_attention_scratch(int Sk, int d);
void gp_attention(const float *q, const float *k, const float *v, int ld, const float *mask, float *out, int ldo,
                  int B, int Sq, int Sk, int heads, int d, float *scratch);


/* 4 rows of 4 floats -> 4 columns: t_i = (r0[i], r1[i], r2[i], r3[i]). */
#define TRANSPOSE4(r0, r1, r2, r3)                          \
  do {                                                      \
    f4 lo01 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5);       \
    f4 hi01 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);       \
    f4 lo23 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);       \
    f4 hi23 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);       \
    r0 = wasm_i32x4_shuffle(lo01, lo23, 0, 1, 4, 5);        \
    r1 = wasm_i32x4_shuffle(lo01, lo23, 2, 3, 6, 7);        \
    r2 = wasm_i32x4_shuffle(hi01, hi23, 0, 1, 4, 5);        \
    r3 = wasm_i32x4_shuffle(hi01, hi23, 2, 3, 6, 7);        \
  } while (0)

/* One full panel from NR rows of length K (`stride` floats apart) holding its columns, i.e. B stored
 * transposed: 4 x 4 blocks transposed in registers, then the K % 4 leftover rows one by one. */
INLINE void pack_rows(const float *bt, int K, int stride, float scale, float *dst) {
  const f4 s = splat(scale);
  int k = 0;
  for (; k + 4 <= K; k += 4, dst += 4 * NR) {
    const float *p = bt + k;
    f4 r0 = ld(p), r1 = ld(p + stride), r2 = ld(p + 2 * stride), r3 = ld(p + 3 * stride);
    f4 r4 = ld(p + 4 * stride), r5 = ld(p + 5 * stride), r6 = ld(p + 6 * stride), r7 = ld(p + 7 * stride);
    TRANSPOSE4(r0, r1, r2, r3);
    TRANSPOSE4(r4, r5, r6, r7);
    st(dst, wasm_f32x4_mul(r0, s));
    st(dst + 4, wasm_f32x4_mul(r4, s));
    st(dst + NR, wasm_f32x4_mul(r1, s));
    st(dst + NR + 4, wasm_f32x4_mul(r5, s));
    st(dst + 2 * NR, wasm_f32x4_mul(r2, s));
    st(dst + 2 * NR + 4, wasm_f32x4_mul(r6, s));
    st(dst + 3 * NR, wasm_f32x4_mul(r3, s));
    st(dst + 3 * NR + 4, wasm_f32x4_mul(r7, s));
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
      f4 s = splat(scale);
      for (int k = 0; k < K; k++, dst += NR, src += sk) {
        st(dst, wasm_f32x4_mul(ld(src), s));
        st(dst + 4, wasm_f32x4_mul(ld(src + 4), s));
      }
    } else {
      for (int k = 0; k < K; k++, dst += NR)
        for (int j = 0; j < NR; j++) dst[j] = j < w ? b[k * sk + (n0 + j) * sn] * scale : 0.0f;
    }
  }
}

#endif
