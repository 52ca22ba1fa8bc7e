/* Element- and row-wise kernels: exact-erf GELU, QuickGELU, softmax with an additive mask, layer norm.
 *
 * Each build runs its target's full width (vecmath.h: 4 lanes in WebAssembly, 8 natively with AVX2, 16 with
 * AVX-512). A row is taken VW lanes at a time, then 4, then one element at a
 * time through the same 4-lane code on a splatted scalar, so every element is computed by one formula. */
#include "simd.h"

#define VW TW   /* the target's widest vectors (simd.h) */

typedef float vw_t __attribute__((vector_size(VW * 4)));
typedef int32_t vwi_t __attribute__((vector_size(VW * 4)));
#define VT vw_t
#define VI vwi_t
#define VN VW
#define V(name) name##_w
#include "vecmath.h"
#undef VT
#undef VI
#undef VN
#undef V

#include "vecmath4.h"

void gp_gelu(const float *x, float *y, int n) {
  int i = 0;
  for (; i + VW <= n; i += VW) store_w(y + i, gelu_w(load_w(x + i)));
  for (; i + 4 <= n; i += 4) store_4(y + i, gelu_4(load_4(x + i)));
  for (; i < n; i++) y[i] = gelu_4(splat_4(x[i]))[0];
}

void gp_quick_gelu(const float *x, float *y, int n) {
  int i = 0;
  for (; i + VW <= n; i += VW) store_w(y + i, quick_gelu_w(load_w(x + i)));
  for (; i + 4 <= n; i += 4) store_4(y + i, quick_gelu_4(load_4(x + i)));
  for (; i < n; i++) y[i] = quick_gelu_4(splat_4(x[i]))[0];
}

/* Row r of x (rows x n) gets mask row (r / mask_div) % mask_mod added first (mask NULL: none): this one
 * pattern covers a mask broadcast over leading axes on either side, e.g. (B, 1, 1, n) against
 * (B, H, S, n). y may alias x. */
void gp_softmax(const float *x, const float *mask, float *y, int rows, int n, int mask_div, int mask_mod) {
  for (int r = 0; r < rows; r++, x += n, y += n) {
    const float *m = mask ? mask + ((r / mask_div) % mask_mod) * n : 0;
    vw_t wmax = splat_w(-__builtin_inff());
    v4_t qmax = splat_4(-__builtin_inff());
    float mx = -__builtin_inff();
    int i = 0;
    for (; i + VW <= n; i += VW) {
      vw_t z = m ? load_w(x + i) + load_w(m + i) : load_w(x + i);
      wmax = select_w((vwi_t)(z > wmax), z, wmax);
    }
    for (; i + 4 <= n; i += 4) {
      v4_t z = m ? load_4(x + i) + load_4(m + i) : load_4(x + i);
      qmax = select_4((v4i_t)(z > qmax), z, qmax);
    }
    for (; i < n; i++) {
      float z = m ? x[i] + m[i] : x[i];
      mx = z > mx ? z : mx;
    }
    float wm = hmax_w(wmax), qm = hmax_4(qmax);
    mx = wm > mx ? wm : mx;
    mx = qm > mx ? qm : mx;
    vw_t wsum = splat_w(0.0f);
    v4_t qsum = splat_4(0.0f);
    float ssum = 0.0f;
    for (i = 0; i + VW <= n; i += VW) {
      vw_t e = exp_w((m ? load_w(x + i) + load_w(m + i) : load_w(x + i)) - mx);
      store_w(y + i, e);
      wsum += e;
    }
    for (; i + 4 <= n; i += 4) {
      v4_t e = exp_4((m ? load_4(x + i) + load_4(m + i) : load_4(x + i)) - mx);
      store_4(y + i, e);
      qsum += e;
    }
    for (; i < n; i++) {
      y[i] = exp_4(splat_4((m ? x[i] + m[i] : x[i]) - mx))[0];
      ssum += y[i];
    }
    const float inv = 1.0f / (hsum_w(wsum) + hsum_4(qsum) + ssum);
    for (i = 0; i + VW <= n; i += VW) store_w(y + i, load_w(y + i) * inv);
    for (; i + 4 <= n; i += 4) store_4(y + i, load_4(y + i) * inv);
    for (; i < n; i++) y[i] *= inv;
  }
}

/* Per row of n: z = x + res (res NULL: z = x), then (z - mean) / sqrt(var + eps) * gamma + beta, two passes
 * over the row for the statistics (mean, then the centred variance, as the reference) so no cancellation.
 * y may alias x or res. Returns how many rows had statistics that are not finite (a sum of squares beyond
 * float32, an infinity or a NaN): their output is not the reference's, and the caller redoes them. */
int add_layer_norm(const float *x, const float *res, const float *gamma, const float *beta, float *y, int rows,
                   int n, float eps) {
  int bad = 0;
  for (int r = 0; r < rows; r++, x += n, y += n, res = res ? res + n : 0) {
#define Z_W(i) (res ? load_w(x + (i)) + load_w(res + (i)) : load_w(x + (i)))
#define Z_4(i) (res ? load_4(x + (i)) + load_4(res + (i)) : load_4(x + (i)))
#define Z_1(i) (res ? x[i] + res[i] : x[i])
    /* Deviations from the row's first value x0, not the values: a constant row's are exactly 0 (its output beta, as
       PyTorch's; the mean of 11 values of 4.6e16 rounded, and the row read -gamma + beta to gamma + beta), and
       there is less to cancel where the mean is far from 0. `mean` is the deviations' mean. */
    const float x0 = n > 0 ? Z_1(0) : 0.0f;
    vw_t ws = splat_w(0.0f);
    v4_t qs = splat_4(0.0f);
    float ss = 0.0f;
    int i = 0;
    for (; i + VW <= n; i += VW) ws += Z_W(i) - x0;
    for (; i + 4 <= n; i += 4) qs += Z_4(i) - x0;
    for (; i < n; i++) ss += Z_1(i) - x0;
    const float mean = (hsum_w(ws) + hsum_4(qs) + ss) / (float)n;
    ws = splat_w(0.0f);
    qs = splat_4(0.0f);
    ss = 0.0f;
    for (i = 0; i + VW <= n; i += VW) {
      vw_t d = Z_W(i) - x0 - mean;
      ws += d * d;
    }
    for (; i + 4 <= n; i += 4) {
      v4_t d = Z_4(i) - x0 - mean;
      qs += d * d;
    }
    for (; i < n; i++) ss += (Z_1(i) - x0 - mean) * (Z_1(i) - x0 - mean);
    const float var = (hsum_w(ws) + hsum_4(qs) + ss) / (float)n;
    bad += !(var - var == 0.0f && mean - mean == 0.0f);   /* false for an infinity or a NaN */
    const float inv = 1.0f / __builtin_sqrtf(var + eps);
    for (i = 0; i + VW <= n; i += VW)
      store_w(y + i, (Z_W(i) - x0 - mean) * inv * load_w(gamma + i) + load_w(beta + i));
    for (; i + 4 <= n; i += 4) store_4(y + i, (Z_4(i) - x0 - mean) * inv * load_4(gamma + i) + load_4(beta + i));
    for (; i < n; i++) y[i] = (Z_1(i) - x0 - mean) * inv * gamma[i] + beta[i];
#undef Z_W
#undef Z_4
#undef Z_1
  }
  return bad;
}

void gp_layer_norm(const float *x, const float *gamma, const float *beta, float *y, int rows, int n, float eps) {
  add_layer_norm(x, 0, gamma, beta, y, rows, n, eps);
}
