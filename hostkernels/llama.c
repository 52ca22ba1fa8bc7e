/* A whole llama block (pre-norm, grouped-query attention with RoPE, SwiGLU) in one call, on the GGUF's
 * quantized weights (qdot.h), so a decode step crosses from Python into the kernels once per layer, not once
 * per op (natively ~15 ops a layer would cost more in Python than their arithmetic):
 *
 *   h = RMSNorm(x) ;  q, k, v = h Wq^T, h Wk^T, h Wv^T      one parallel pass over the three weights' rows
 *   q, k = RoPE(q), RoPE(k) (adjacent pairs, the GGUF's layout) ;  k, v appended to the caches in place
 *   x += attention(q, K cache, V cache) Wo^T               causal, query head h reads kv head h / (H / Hkv)
 *   h = RMSNorm(x) ;  x += (silu(h Wgate^T) * h Wup^T) Wdown^T
 *
 * The steps are models/llama_ref's (the NumPy oracle); the products quantize their input to 8-bit blocks. */
#include "simd.h"
#include "qdot.h"

#include "vecmath4.h"

INLINE float dot_f(const float *a, const float *b, int n) {
  vt acc = splat(0.0f);
  int i = 0;
  for (; i + TW <= n; i += TW) acc = madd(ld(a + i), ld(b + i), acc);
  float s = 0.0f;
  for (int l = 0; l < TW; l++) s += acc[l];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* y = weight * (x / sqrt(mean(x^2) + eps)), one row of n */
INLINE void rms_norm_row(const float *x, const float *weight, float *y, int n, float eps) {
  const float r = 1.0f / __builtin_sqrtf(dot_f(x, x, n) / (float)n + eps);
  for (int i = 0; i < n; i++) y[i] = weight[i] * (x[i] * r);
}

/* Adjacent pairs (2i, 2i+1) of each of `heads` heads of one position rotated by (cos[i], sin[i]). */
INLINE void rope_row(float *x, int heads, int hd, const float *cos, const float *sin) {
  for (int h = 0; h < heads; h++, x += hd)
    for (int i = 0; i < hd / 2; i++) {
      const float e = x[2 * i], o = x[2 * i + 1];
      x[2 * i] = e * cos[i] - o * sin[i];
      x[2 * i + 1] = o * cos[i] + e * sin[i];
    }
}

/* silu(g) * u over n values, written over g: g / (1 + e^-g) with e^-|g| (vecmath's exp takes x <= 0). */
INLINE void swiglu_row(float *g, const float *u, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v4_t x = load_4(g + i), e = exp_4((v4_t)((v4i_t)x | (int32_t)0x80000000)), inv = 1.0f / (1.0f + e);
    store_4(g + i, x * select_4((v4i_t)(x >= 0.0f), inv, e * inv) * load_4(u + i));
  }
  for (; i < n; i++) {
    const v4_t x = splat_4(g[i]), e = exp_4((v4_t)((v4i_t)x | (int32_t)0x80000000)), inv = 1.0f / (1.0f + e);
    g[i] = (x * select_4((v4i_t)(x >= 0.0f), inv, e * inv))[0] * u[i];
  }
}

struct attn {
  const float *q, *kc, *vc;
  float *out, *scores;
  int T, start, heads, group, hd, dim, kvw, S;
  float scale;
};

/* (position, head) items [lo, hi): softmax(q k^T / sqrt(hd)) v over the positions up to its own. */
INLINE void attn_items(void *ctx, int lo, int hi, int slot) {
  const struct attn *A = ctx;
  float *sc = A->scores + slot * A->S;
  for (int i = lo; i < hi; i++) {
    const int t = i / A->heads, h = i % A->heads, n = A->start + t + 1, hd = A->hd;
    const float *qv = A->q + t * A->dim + h * hd, *k = A->kc + (h / A->group) * hd, *v = A->vc + (h / A->group) * hd;
    float mx = -__builtin_inff();
    for (int s = 0; s < n; s++) {
      sc[s] = dot_f(qv, k + s * A->kvw, hd) * A->scale;
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
    float *o = A->out + t * A->dim + h * hd;
    for (int j = 0; j < hd; j++) o[j] = 0.0f;
    for (s = 0; s < n; s++) {
      const float p = sc[s];
      const float *vr = v + s * A->kvw;
      int j = 0;
      for (; j + TW <= hd; j += TW) st(o + j, madd(splat(p), ld(vr + j), ld(o + j)));
      for (; j < hd; j++) o[j] += p * vr[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < hd; j++) o[j] *= inv;
  }
}

int gp_llama_scratch(int T, int S, int dim, int ffn, int threads) {
  return 3 * T * dim + 2 * T * ffn + max_i(threads, 1) * S + q_act_floats(T, max_i(dim, ffn));
}

/* x (T, dim) at positions start .. start + T - 1, in place. cos, sin: (T, hd / 2). Weights: ggml `kind` blocks,
 * (N, K) as stored: wq (dim, dim), wk and wv (kv_dim, dim), wo (dim, dim), w_gate and w_up (ffn, dim), w_down
 * (dim, ffn). k_cache, v_cache: this layer's (capacity, kv_dim) rows; rows start .. start + T - 1 are written. */
void gp_llama_layer(float *x, int T, int start, int dim, int heads, int kv_heads, int ffn, float eps, const float *cos,
                    const float *sin, const float *attn_norm, const uint8_t *wq, const uint8_t *wk, const uint8_t *wv,
                    const uint8_t *wo, const float *ffn_norm, const uint8_t *w_gate, const uint8_t *w_up,
                    const uint8_t *w_down, int kind, float *k_cache, float *v_cache, float *scratch, int threads) {
  const int hd = dim / heads, kvw = kv_heads * hd, S = start + T, half = hd / 2;
  if (threads < 1) threads = 1;
  float *h = scratch, *q = h + T * dim, *a = q + T * dim, *gu = a + T * dim, *scores = gu + 2 * T * ffn;
  float *ds = scores + threads * S;
  int8_t *xq = (int8_t *)(ds + T * (max_i(dim, ffn) / QK) * 2);
  float *kn = k_cache + start * kvw, *vn = v_cache + start * kvw;

  for (int t = 0; t < T; t++) {
    rms_norm_row(x + t * dim, attn_norm, h + t * dim, dim, eps);
    quantize_row(h + t * dim, dim, xq + t * dim, ds + t * (dim / QK) * 2);
  }
  struct qjob qkv = {xq, ds, T, dim, kind, wq, wk, wv, dim, kvw, kvw, q, kn, vn, dim, kvw, kvw};
  qjob_run(&qkv, threads);
  for (int t = 0; t < T; t++) {
    rope_row(q + t * dim, heads, hd, cos + t * half, sin + t * half);
    rope_row(kn + t * kvw, kv_heads, hd, cos + t * half, sin + t * half);
  }
  struct attn A = {q, k_cache, v_cache, a, scores, T, start, heads, heads / kv_heads, hd, dim, kvw, S,
                   1.0f / __builtin_sqrtf((float)hd)};
  gp_parallel(threads, T * heads, T * heads, attn_items, &A);

  for (int t = 0; t < T; t++) quantize_row(a + t * dim, dim, xq + t * dim, ds + t * (dim / QK) * 2);
  struct qjob out = {xq, ds, T, dim, kind, wo, wo, wo, dim, 0, 0, h, h, h, dim, dim, dim};
  qjob_run(&out, threads);
  for (int i = 0; i < T * dim; i++) x[i] += h[i];

  for (int t = 0; t < T; t++) {
    rms_norm_row(x + t * dim, ffn_norm, h + t * dim, dim, eps);
    quantize_row(h + t * dim, dim, xq + t * dim, ds + t * (dim / QK) * 2);
  }
  struct qjob up = {xq, ds, T, dim, kind, w_gate, w_up, w_up, ffn, ffn, 0, gu, gu + ffn, gu, 2 * ffn, 2 * ffn, 0};
  qjob_run(&up, threads);
  for (int t = 0; t < T; t++) {
    swiglu_row(gu + t * 2 * ffn, gu + t * 2 * ffn + ffn, ffn);
    quantize_row(gu + t * 2 * ffn, ffn, xq + t * ffn, ds + t * (ffn / QK) * 2);
  }
  struct qjob down = {xq, ds, T, ffn, kind, w_down, w_down, w_down, dim, 0, 0, h, h, h, dim, dim, dim};
  qjob_run(&down, threads);
  for (int i = 0; i < T * dim; i++) x[i] += h[i];
}
