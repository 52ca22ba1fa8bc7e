/* Quantized dot products: ggml's Q4_1 and Q8_0 weight blocks, read in place as the GGUF stores them (no float
 * copy and no repacked copy of a weight is kept: the host path's memory is the file's), against activations
 * quantized on the fly to 8-bit blocks (ggml's Q8_1: per 32 values int8 q, a scale d = max|x| / 127 and
 * s = d * sum(q), the term Q4_1's offset needs).
 *
 *   Q4_1 block (20 bytes): f16 d, f16 m, 16 bytes; element j < 16 is byte j's low nibble, 16 + j its high one.
 *   Q8_0 block (34 bytes): f16 d, 32 int8.
 *   Q4_1 . Q8_1 = d_w d_x sum(q_w q_x) + m_w s_x;   Q8_0 . Q8_1 = d_w d_x sum(q_w q_x).
 *
 * The integer sums are exact in every build: per block at most 32 * 15 * 127 (Q4_1) or 32 * 128 * 127 (Q8_0),
 * and every intermediate pair sum fits int16. So every build computes the same block sums; only the float
 * accumulation of the scaled block sums differs in order (within float32 rounding, tests/test_quant_host.py).
 *
 * Per target: AVX2 natively (vpmaddubsw + vpmaddwd as llama.cpp's kernels; VNNI's vpdpbusd where the build has it),
 * SIMD128 in WebAssembly (i16x8.extmul + i32x4.extadd_pairwise; the relaxed build too: relaxed SIMD's
 * i32x4.relaxed_dot_i8x16_i7x16_add_s would take Q4_1's nibbles as its 7-bit operand, but engines disagree on it:
 * Node 20's V8 returns twice the sum that Chromium's returns for the same operands), plain C elsewhere. */
#ifndef GPUPORT_QDOT_H
#define GPUPORT_QDOT_H

#include "simd.h"

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

#define QK 32
#define GGML_Q4_1 3   /* ggml's type ids, as the GGUF names them */
#define GGML_Q8_0 8

INLINE int q_block_bytes(int kind) { return kind == GGML_Q4_1 ? 20 : 34; }

INLINE uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* IEEE half -> float, exact for every value (subnormals, infinities, NaN), in integer and float arithmetic
 * only: no table (the WebAssembly build owns no data) and no F16C needed (natively it is used when present). */
INLINE float f16(const uint8_t *p) {
#if defined(__F16C__)
  return _cvtsh_ss(ld16(p));
#else
  const uint32_t w = (uint32_t)ld16(p) << 16, sign = w & 0x80000000u, two_w = w + w;
  /* zero or subnormal: the mantissa as a float less the magic bias; else rebias the exponent by a multiply */
  const float f = two_w < (1u << 27) ? __builtin_bit_cast(float, (two_w >> 17) | (126u << 23)) - 0.5f
                                     : __builtin_bit_cast(float, (two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  return __builtin_bit_cast(float, __builtin_bit_cast(uint32_t, f) | sign);
#endif
}

/* One row of K floats (K a multiple of 32) -> int8 q[K] and per block (d, s) in ds[2 * K / 32]. Rounding to
 * nearest, ties to even (NumPy's np.round, the reference's). A block holding a NaN or an infinity gets
 * d = NaN and q = 0, so every product it enters is NaN: never a finite wrong answer. */
INLINE void quantize_row(const float *x, int K, int8_t *q, float *ds) {
  for (int b = 0; b < K / QK; b++, x += QK, q += QK) {
    /* written on 4-lane vectors: the vectorizer's own form of this reduction wants a shadow stack in wasm */
    typedef int32_t v4i __attribute__((vector_size(16)));
    v4 mx = {0.0f, 0.0f, 0.0f, 0.0f};
    v4i bad = {0, 0, 0, 0};
    for (int j = 0; j < QK; j += 4) {
      const v4 a = (v4)((v4i)ld4(x + j) & 0x7fffffff);
      const v4i more = (v4i)(a > mx);
      bad |= ~(v4i)(a <= 3.4028234e38f);   /* NaN or infinity */
      mx = (v4)(((v4i)a & more) | ((v4i)mx & ~more));
    }
    float m = mx[0];
    for (int l = 1; l < 4; l++) m = mx[l] > m ? mx[l] : m;
    const int finite = !(bad[0] | bad[1] | bad[2] | bad[3]);
    if (!finite) {
      for (int j = 0; j < QK; j++) q[j] = 0;
      ds[2 * b] = ds[2 * b + 1] = __builtin_nanf("");
      continue;
    }
    const float d = m / 127.0f, id = m != 0.0f ? 127.0f / m : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK; j++) {
      const int v = (int)__builtin_roundevenf(x[j] * id);
      q[j] = (int8_t)v;
      sum += v;
    }
    ds[2 * b] = d;
    ds[2 * b + 1] = d * (float)sum;
  }
}

/* Dots over `nb` blocks of weight rows (`w`, `kind`) with one quantized activation row (q, ds). */
#if defined(__AVX2__)
INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Q4_1: one block's integer products as 8 int32 lanes: VNNI's vpdpbusd (unsigned nibbles times signed x, summed
 * in fours) where the build has it, else vpmaddubsw + vpmaddwd, as llama.cpp's. */
INLINE __m256i q4_1_dot(__m256i wq, __m256i x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, x);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wq, x);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(wq, x), _mm256_set1_epi16(1));
#endif
}

/* A Q4_1 block's 32 nibbles as bytes, in x's order (low nibbles, then high). */
INLINE __m256i q4_1_unpack(const uint8_t *w) {
  __m128i raw = _mm_loadu_si128((const __m128i *)(w + 4));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

INLINE __m256i q4_1_block(const uint8_t *w, __m256i x) { return q4_1_dot(q4_1_unpack(w), x); }

/* Q4_1's (d_w d_x, m_w s_x) for one block in the low two lanes: its two f16 halves converted at once. */
INLINE __m128 q4_1_scales(const uint8_t *w, const float *ds) {
  int dm;
  __builtin_memcpy(&dm, w, 4);
  return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dm)), _mm_castpd_ps(_mm_load_sd((const double *)ds)));
}

/* acc += one Q4_1 block's scaled products; off gathers its offset term (lane 1). */
INLINE void q4_1_step(const uint8_t *w, const int8_t *q, const float *ds, __m256 *acc, __m128 *off) {
  const __m128 s = q4_1_scales(w, ds);
  const __m256i p = q4_1_block(w, _mm256_loadu_si256((const __m256i *)q));
  *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), *acc);
  *off = _mm_add_ps(*off, s);
}

/* One weight row's blocks in order: a single ascending stream, which the hardware prefetcher follows. Two rows
 * read side by side (one activation load for both) streamed SmolLM2's ffn_down (960-byte rows) at 8 GB/s on this
 * EPYC, one row at a time at 27. Two accumulators, so consecutive blocks' multiply-adds do not wait on each other. */
INLINE float row_dot(int kind, const uint8_t *w, const int8_t *q, const float *ds, int nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  if (kind != GGML_Q4_1) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++, w += 34, q += QK) {
      __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2));
      __m256i xq = _mm256_loadu_si256((const __m256i *)q);
      /* vpmaddubsw multiplies unsigned by signed: |w| times x carrying w's sign */
      __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq)), ones);
      __m256 s = _mm256_set1_ps(f16(w) * ds[2 * b]);
      if (b & 1) acc1 = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc1);
      else acc0 = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
  }
  __m128 off = _mm_setzero_ps();
  int b = 0;
  for (; b + 2 <= nb; b += 2, w += 40, q += 2 * QK) {
    q4_1_step(w, q, ds + 2 * b, &acc0, &off);
    q4_1_step(w + 20, q + QK, ds + 2 * b + 2, &acc1, &off);
  }
  if (b < nb) q4_1_step(w, q, ds + 2 * b, &acc0, &off);
  return hsum8(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_shuffle_ps(off, off, 1));
}

/* One Q4_1 weight row against `rows` (2..4, a constant once inlined) activation rows K apart, their dots in y[0],
 * y[ld], ...: each block's nibbles and halves unpacked once for all of them (a prompt's rows). */
#define Q4_1_ROW(r, acc, off)                                                                                 \
  do {                                                                                                        \
    const __m128 s = _mm_mul_ps(dm, _mm_castpd_ps(_mm_load_sd((const double *)(ds + (r) * nb * 2 + 2 * b)))); \
    const __m256i p = q4_1_dot(wq, _mm256_loadu_si256((const __m256i *)(q + (r) * K + b * QK)));               \
    acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc);                              \
    off = _mm_add_ps(off, s);                                                                                 \
  } while (0)

INLINE void q4_1_rows(const uint8_t *w, const int8_t *q, int K, const float *ds, int nb, const int rows, float *y,
                      int ld) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  __m128 o0 = _mm_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
  for (int b = 0; b < nb; b++, w += 20) {
    int bits;
    __builtin_memcpy(&bits, w, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    const __m256i wq = q4_1_unpack(w);
    Q4_1_ROW(0, a0, o0);
    Q4_1_ROW(1, a1, o1);
    if (rows > 2) Q4_1_ROW(2, a2, o2);
    if (rows > 3) Q4_1_ROW(3, a3, o3);
  }
  y[0] = hsum8(a0) + _mm_cvtss_f32(_mm_shuffle_ps(o0, o0, 1));
  y[ld] = hsum8(a1) + _mm_cvtss_f32(_mm_shuffle_ps(o1, o1, 1));
  if (rows > 2) y[2 * ld] = hsum8(a2) + _mm_cvtss_f32(_mm_shuffle_ps(o2, o2, 1));
  if (rows > 3) y[3 * ld] = hsum8(a3) + _mm_cvtss_f32(_mm_shuffle_ps(o3, o3, 1));
}
#undef Q4_1_ROW

/* One weight row against M activation rows (y[m * ld]): Q4_1's in fours, then the 1..3 left. */
INLINE void rows_dot(int kind, const uint8_t *w, const int8_t *q, int K, const float *ds, int nb, int M, float *y,
                     int ld) {
  int m = 0;
  if (kind == GGML_Q4_1) {
    for (; m + 4 <= M; m += 4) q4_1_rows(w, q + m * K, K, ds + m * nb * 2, nb, 4, y + m * ld, ld);
    switch (M - m) {
      case 3: q4_1_rows(w, q + m * K, K, ds + m * nb * 2, nb, 3, y + m * ld, ld); return;
      case 2: q4_1_rows(w, q + m * K, K, ds + m * nb * 2, nb, 2, y + m * ld, ld); return;
      default: break;   /* one row (row_dot's two accumulators) or none */
    }
  }
  for (; m < M; m++) y[m * ld] = row_dot(kind, w, q + m * K, ds + m * nb * 2, nb);
}
#elif defined(__wasm_simd128__)
/* sum(w * x) of 16 int8 pairs into the 4 lanes of acc (w the weight bytes: Q4_1's nibbles or Q8_0's int8). */
INLINE v128_t dot16(v128_t w, v128_t x, v128_t acc) {
  v128_t p = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(w, x), wasm_i16x8_extmul_high_i8x16(w, x));
  return wasm_i32x4_add(acc, wasm_i32x4_extadd_pairwise_i16x8(p));
}

INLINE float row_dot(int kind, const uint8_t *w, const int8_t *q, const float *ds, int nb) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  float offsets = 0.0f;
  if (kind == GGML_Q4_1) {
    for (int b = 0; b < nb; b++, w += 20, q += QK) {
      v128_t raw = wasm_v128_load(w + 4);
      v128_t lo = wasm_v128_and(raw, wasm_i8x16_splat(0x0F)), hi = wasm_u8x16_shr(raw, 4);
      v128_t x0 = wasm_v128_load(q), x1 = wasm_v128_load(q + 16);
      v128_t p = dot16(lo, x0, dot16(hi, x1, wasm_i32x4_splat(0)));
      acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(p), wasm_f32x4_splat(f16(w) * ds[2 * b])));
      offsets += f16(w + 2) * ds[2 * b + 1];
    }
  } else {
    for (int b = 0; b < nb; b++, w += 34, q += QK) {
      v128_t p = dot16(wasm_v128_load(w + 2), wasm_v128_load(q),
                       dot16(wasm_v128_load(w + 18), wasm_v128_load(q + 16), wasm_i32x4_splat(0)));
      acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(p), wasm_f32x4_splat(f16(w) * ds[2 * b])));
    }
  }
  return wasm_f32x4_extract_lane(acc, 0) + wasm_f32x4_extract_lane(acc, 1) + wasm_f32x4_extract_lane(acc, 2) +
         wasm_f32x4_extract_lane(acc, 3) + offsets;
}
#else
INLINE float row_dot(int kind, const uint8_t *w, const int8_t *q, const float *ds, int nb) {
  float acc = 0.0f;
  for (int b = 0; b < nb; b++, q += QK) {
    int sum = 0;
    if (kind == GGML_Q4_1) {
      for (int j = 0; j < 16; j++) sum += (w[4 + j] & 0x0F) * q[j] + (w[4 + j] >> 4) * q[16 + j];
      acc += f16(w) * ds[2 * b] * (float)sum + f16(w + 2) * ds[2 * b + 1];
      w += 20;
    } else {
      for (int j = 0; j < QK; j++) sum += (int8_t)w[2 + j] * q[j];
      acc += f16(w) * ds[2 * b] * (float)sum;
      w += 34;
    }
  }
  return acc;
}
#endif

#if !defined(__AVX2__)
INLINE void rows_dot(int kind, const uint8_t *w, const int8_t *q, int K, const float *ds, int nb, int M, float *y,
                     int ld) {
  for (int m = 0; m < M; m++) y[m * ld] = row_dot(kind, w, q + m * K, ds + m * nb * 2, nb);
}
#endif

/* Floats of scratch the quantized activations of M rows of K take: int8 values after the (d, s) pairs. */
INLINE int q_act_floats(int M, int K) { return M * (K / QK) * 2 + (M * K + 3) / 4; }

/* Up to three products sharing one quantized input (M rows of K): Y_i (M x N_i, rows ld_i apart) = X W_i^T,
 * their weight rows taken together as one range [0, N_0 + N_1 + N_2) so one parallel-for covers all three. */
struct qjob {
  const int8_t *q;
  const float *ds;
  int M, K, kind;
  const uint8_t *w0, *w1, *w2;
  int n0, n1, n2;
  float *y0, *y1, *y2;
  int ld0, ld1, ld2;
};

/* Rows [n_lo, n_hi) of W against every row of X (a weight row stays in L1 across X's rows). */
INLINE void qjob_range(const struct qjob *J, const uint8_t *w, int n_lo, int n_hi, float *y, int ld) {
  const int nb = J->K / QK, row = nb * q_block_bytes(J->kind);
  for (int n = n_lo; n < n_hi; n++) rows_dot(J->kind, w + (long)n * row, J->q, J->K, J->ds, nb, J->M, y + n, ld);
}

/* Weight rows [lo, hi) of the joined range (a part of gp_parallel). */
INLINE void qjob_rows(void *ctx, int lo, int hi, int slot) {
  const struct qjob *J = ctx;
  (void)slot;
  const int e0 = J->n0, e1 = e0 + J->n1;
  if (lo < e0) qjob_range(J, J->w0, lo, min_i(hi, e0), J->y0, J->ld0);
  if (hi > e0 && lo < e1) qjob_range(J, J->w1, (lo > e0 ? lo : e0) - e0, min_i(hi, e1) - e0, J->y1, J->ld1);
  if (hi > e1) qjob_range(J, J->w2, (lo > e1 ? lo : e1) - e1, hi - e1, J->y2, J->ld2);
}

/* One part per thread, taken in turn (a thread that starts late leaves its part to one that is done): each part a
 * single run of weight rows, streamed once. SmolLM2's decode at 2 threads (this EPYC, natively): 8 parts a thread
 * 212-249 tokens/s, 2 a thread 276-296, 1 a thread 323-334; every start of a part restarts the prefetcher's stream. */
INLINE void qjob_run(struct qjob *J, int threads) {
  gp_parallel(threads, J->n0 + J->n1 + J->n2, threads, qjob_rows, J);
}

#endif
