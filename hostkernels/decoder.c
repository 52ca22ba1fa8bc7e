/* A whole pre-norm transformer decoder layer (Whisper's) for the few new positions of a decode step, in one call,
 * and the two pieces around the layers: a product split over threads, and the greedy choice of the next token.
 *
 *   h = LN1(x) ;  q, k, v = h Wqkv^T + bqkv     one packed product; k, v appended to the caches in place
 *   x += attention(q, K cache, V cache) Wo^T + bo            causal: position t reads the cache up to itself
 *   h = LN2(x) ;  q = h Wxq^T + bxq
 *   x += attention(q, XK, XV) Wxo^T + bxo                    cross: every row of the encoder's keys and values
 *   h = LN3(x) ;  x += gelu(h Wi^T + bi) Wo2^T + bo2
 *
 * A step has one new row (a prompt a few), so a product by rows would leave every thread but one idle: each
 * product is split by its packed weight's column panels and every thread streams its share of the weights (a step
 * is bound by reading them: ~7 MB a layer for Whisper tiny, 80 MB for its vocabulary). Attention is split by
 * (row, head), one query row against its keys with dot products: no key packing per step. */
#include "simd.h"

#include "vecmath4.h"

INLINE float dot_k(const float *a, const float *b, int n) {
  vt acc = splat(0.0f);
  int i = 0;
  for (; i + TW <= n; i += TW) acc = madd(ld(a + i), ld(b + i), acc);
  float s = 0.0f;
  for (int l = 0; l < TW; l++) s += acc[l];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

struct cols {
  const float *a, *packed;
  float *c;
  int M, K, N, ldc, gelu;
};

INLINE void cols_part(void *ctx, int lo, int hi, int slot) {
  const struct cols *P = ctx;
  (void)slot;
  const int c0 = lo * NR, w = min_i(hi * NR, P->N) - c0;
  gp_matmul_packed(P->a, P->M, P->K, P->K, P->packed + (long)lo * panel_floats(P->K), w, P->c + c0, P->ldc);
  if (P->gelu)
    for (int r = 0; r < P->M; r++) gp_gelu(P->c + r * P->ldc + c0, P->c + r * P->ldc + c0, w);
}

/* C (M x N, rows ldc apart) = A (M x K) @ packed (+ its bias), optionally GELU'd, its column panels shared out. */
INLINE void by_cols(int threads, const float *a, int M, int K, const float *packed, int N, float *c, int ldc,
                    int gelu) {
  struct cols P = {a, packed, c, M, K, N, ldc, gelu};
  const int panels = (N + NR - 1) / NR;
  gp_parallel(threads, panels, 4 * threads, cols_part, &P);
}

void gp_matmul_threads(const float *a, int M, int K, const float *packed, int N, float *c, int ldc, int threads) {
  by_cols(threads < 1 ? 1 : threads, a, M, K, packed, N, c, ldc, 0);
}

/* int8 lanes widened to float32 (exactly: one sign extension and one conversion a vector). */
typedef int8_t vq __attribute__((vector_size(TW)));
typedef int32_t vqi __attribute__((vector_size(TW * 4)));
INLINE vt ld_q8(const int8_t *p) {
  vq q;
  __builtin_memcpy(&q, p, sizeof q);
  return __builtin_convertvector(__builtin_convertvector(q, vqi), vt);
}
/* The lanes' sum by halves: a row's few vectors leave this a fifth of gp_project_q8's time, lane by lane (natively
 * with AVX-512, 51,864 rows of 384: 2.9 -> 2.3 ms). */
typedef float v8 __attribute__((vector_size(32)));
INLINE float hsum(vt v) {
#if TW == 16
  const v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
#elif TW == 8
  const v4 q = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
  const v4 q = v;
#endif
  return (q[0] + q[2]) + (q[1] + q[3]);
}

struct q8_rows {
  const float *x, *scale;
  const int8_t *w;
  float *out;
  int K;
};

/* Rows [lo, hi) of W against x, one after another: one steady stream from memory (a bfloat16 copy read four rows'
 * streams side by side ran 1.2x slower than one at a time, natively with AVX-512), four accumulators hiding the
 * multiply-add's latency. */
INLINE void q8_part(void *ctx, int lo, int hi, int slot) {
  const struct q8_rows *P = ctx;
  const int K = P->K;
  const float *x = P->x;
  (void)slot;
  for (int j = lo; j < hi; j++) {
    const int8_t *w = P->w + (long)j * K;
    vt a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 4 * TW <= K; i += 4 * TW) {
      a0 = madd(ld(x + i), ld_q8(w + i), a0);
      a1 = madd(ld(x + i + TW), ld_q8(w + i + TW), a1);
      a2 = madd(ld(x + i + 2 * TW), ld_q8(w + i + 2 * TW), a2);
      a3 = madd(ld(x + i + 3 * TW), ld_q8(w + i + 3 * TW), a3);
    }
    for (; i + TW <= K; i += TW) a0 = madd(ld(x + i), ld_q8(w + i), a0);
    float s = hsum((a0 + a1) + (a2 + a3));
    for (; i < K; i++) s += x[i] * (float)w[i];
    P->out[j] = s * P->scale[j];
  }
}

/* out (N) = x (K) W^T, W (N x K) int8 rows times their scales: a vocabulary's logits from a quarter of its bytes (a
 * step's product is bound by reading the weight), each thread streaming one run of rows. Approximate: the caller
 * bounds each row's error and checks the rows that could win against the float32 weight (gpuport.host.vocab). */
void gp_project_q8(const float *x, int K, const int8_t *w, const float *scale, int N, float *out, int threads) {
  struct q8_rows P = {x, scale, w, out, K};
  const int parts = threads < 1 ? 1 : threads;
  gp_parallel(parts, N, parts, q8_part, &P);
}

struct attend {
  const float *q, *k, *v;
  float *out, *scores;
  int heads, d, H, ldkv, keys, causal_from, S;
  float scale;
};

/* (row, head) items [lo, hi): softmax(q k^T / sqrt(d)) v over the row's keys: all `keys`, or with causal_from >= 0
 * the first causal_from + t + 1 (row t sits at position causal_from + t). */
INLINE void attend_items(void *ctx, int lo, int hi, int slot) {
  const struct attend *A = ctx;
  float *sc = A->scores + slot * A->S;
  for (int i = lo; i < hi; i++) {
    const int t = i / A->heads, off = (i % A->heads) * A->d, d = A->d;
    const int n = A->causal_from >= 0 ? A->causal_from + t + 1 : A->keys;
    const float *qv = A->q + t * A->H + off, *k = A->k + off, *v = A->v + off;
    float mx = -__builtin_inff();
    for (int s = 0; s < n; s++) {
      sc[s] = dot_k(qv, k + (long)s * A->ldkv, d) * A->scale;
      mx = sc[s] > mx ? sc[s] : mx;
    }
    float sum = 0.0f;
    int s = 0;
    for (; s + 4 <= n; s += 4) {
      v4_t e = exp_4(load_4(sc + s) - mx);
      store_4(sc + s, e);
      sum += e[0] + e[1] + e[2] + e[3];
    }
    for (; s < n; s++) sum += sc[s] = exp_4(splat_4(sc[s] - mx))[0];
    float *o = A->out + t * A->H + off;
    for (int j = 0; j < d; j++) o[j] = 0.0f;
    for (s = 0; s < n; s++) {
      const float p = sc[s];
      const float *vr = v + (long)s * A->ldkv;
      int j = 0;
      for (; j + TW <= d; j += TW) st(o + j, madd(splat(p), ld(vr + j), ld(o + j)));
      for (; j < d; j++) o[j] += p * vr[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < d; j++) o[j] *= inv;
  }
}

INLINE void attend(int threads, const float *q, const float *k, const float *v, int ldkv, float *out, int T, int H,
                   int heads, int keys, int causal_from, float *scores, int S) {
  const int d = H / heads;
  struct attend A = {q, k, v, out, scores, heads, d, H, ldkv, keys, causal_from, S,
                     1.0f / __builtin_sqrtf((float)d)};
  gp_parallel(threads, T * heads, T * heads, attend_items, &A);
}

int gp_decoder_scratch(int T, int S, int H, int F, int threads) {
  return T * (3 * H + H + H + F) + max_i(threads, 1) * S;
}

/* x (T, H) at positions start .. start + T - 1, in place. Weights packed (gp_pack_b, transposed, bias folded in):
 * wqkv 3H x H, wo, wxq, wxo H x H, wi F x H, wo2 H x F. k_cache, v_cache: this layer's (capacity, H) rows, rows
 * start .. start + T - 1 written. xk, xv: the encoder's keys and values for this layer, (S_enc, H). S: the most
 * keys any row reads (max(start + T, S_enc)), for the scratch. */
void gp_decoder_layer(float *x, int T, int start, int H, int heads, int F, int S_enc, float eps, const float *ln1_g,
                      const float *ln1_b, const float *wqkv, const float *wo, const float *lnx_g, const float *lnx_b,
                      const float *wxq, const float *xk, const float *xv, const float *wxo, const float *ln2_g,
                      const float *ln2_b, const float *wi, const float *wo2, float *k_cache, float *v_cache,
                      float *scratch, int threads) {
  if (threads < 1) threads = 1;
  const int S = max_i(start + T, S_enc);
  float *h = scratch, *qkv = h + T * H, *a = qkv + 3 * T * H, *f = a + T * H, *scores = f + T * F;
  float *o = qkv;   /* a projection's output, once attention has read q */

  gp_layer_norm(x, ln1_g, ln1_b, h, T, H, eps);
  by_cols(threads, h, T, H, wqkv, 3 * H, qkv, 3 * H, 0);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < H; j++) {
      k_cache[(long)(start + t) * H + j] = qkv[t * 3 * H + H + j];
      v_cache[(long)(start + t) * H + j] = qkv[t * 3 * H + 2 * H + j];
    }
  /* q rows are 3H apart in qkv: packed to H apart first, into h (free again) */
  for (int t = 0; t < T; t++)
    for (int j = 0; j < H; j++) h[t * H + j] = qkv[t * 3 * H + j];
  attend(threads, h, k_cache, v_cache, H, a, T, H, heads, 0, start, scores, S);
  by_cols(threads, a, T, H, wo, H, o, H, 0);
  for (int i = 0; i < T * H; i++) x[i] += o[i];

  gp_layer_norm(x, lnx_g, lnx_b, h, T, H, eps);
  by_cols(threads, h, T, H, wxq, H, o, H, 0);
  attend(threads, o, xk, xv, H, a, T, H, heads, S_enc, -1, scores, S);
  by_cols(threads, a, T, H, wxo, H, o, H, 0);
  for (int i = 0; i < T * H; i++) x[i] += o[i];

  gp_layer_norm(x, ln2_g, ln2_b, h, T, H, eps);
  by_cols(threads, h, T, H, wi, F, f, F, 1);
  by_cols(threads, f, T, F, wo2, H, o, H, 0);
  for (int i = 0; i < T * H; i++) x[i] += o[i];
}

/* The greedy choice over n logits plus an additive bias (0 or -inf: the suppressed tokens; NULL: none): the index of
 * the largest (the first of equals, as NumPy's argmax), and in *sumexp the sum of e^(z - z_max) over all of them
 * (accumulated in double), so its log-probability is -log(*sumexp) (no libm here: the caller takes the log).
 * Returns -1 when a logit is NaN or +inf, or every one is -inf: the caller decides those. */
int gp_greedy(const float *logits, const float *bias, int n, float *sumexp) {
  int best = -1;
  float mx = -__builtin_inff();
  for (int i = 0; i < n; i++) {
    const float z = bias ? logits[i] + bias[i] : logits[i];
    if (z != z || z == __builtin_inff()) return -1;
    if (z > mx) {
      mx = z;
      best = i;
    }
  }
  if (best < 0) return -1;
  double sum = 0.0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v4_t z = load_4(logits + i);
    if (bias) z += load_4(bias + i);
    const v4_t e = exp_4(z - mx);
    sum += (double)e[0] + (double)e[1] + (double)e[2] + (double)e[3];
  }
  for (; i < n; i++) sum += (double)exp_4(splat_4((bias ? logits[i] + bias[i] : logits[i]) - mx))[0];
  *sumexp = (float)sum;
  return best;
}
