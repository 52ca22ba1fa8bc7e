/* Element- and row-wise kernels: exact-erf GELU, softmax with an additive mask, layer norm.
 * Row tails (n % 4) run through the same vector code on a splatted scalar, so every element is computed
 * by one formula. */
#include "simd.h"

/* GELU(x) = x/2 (1 + erf(x/sqrt2)) with erf by Abramowitz & Stegun 7.1.26, as gpuport's reference.
 * With q = poly(t) exp(-x^2/2) (= erfc(|x|/sqrt2)) and h = x q / 2: GELU = x - h for x >= 0, h below.
 * Written this way the large-|x| result is x minus a small term (no 1 + erf rounding), which keeps it
 * within an ulp or two of the float64 reference. */
INLINE f4 gelu4(f4 x) {
  f4 a = wasm_f32x4_abs(wasm_f32x4_mul(x, splat(0.70710678118654752f)));
  f4 t = wasm_f32x4_div(splat(1.0f), wasm_f32x4_add(splat(1.0f), wasm_f32x4_mul(a, splat(0.3275911f))));
  f4 p = splat(1.061405429f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(-1.453152027f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(1.421413741f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(-0.284496736f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(0.254829592f));
  p = wasm_f32x4_mul(p, t);
  f4 q = wasm_f32x4_mul(p, exp4(wasm_f32x4_neg(wasm_f32x4_mul(a, a))));
  f4 h = wasm_f32x4_mul(wasm_f32x4_mul(x, splat(0.5f)), q);
  return wasm_v128_bitselect(wasm_f32x4_sub(x, h), h, wasm_f32x4_ge(x, splat(0.0f)));
}

EXPORT(gp_gelu) void gp_gelu(const float *x, float *y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    st(y + i, gelu4(ld(x + i)));
    st(y + i + 4, gelu4(ld(x + i + 4)));
  }
  for (; i + 4 <= n; i += 4) st(y + i, gelu4(ld(x + i)));
  for (; i < n; i++) y[i] = wasm_f32x4_extract_lane(gelu4(splat(x[i])), 0);
}

/* Row r of x (rows x n) gets mask row (r / mask_div) % mask_mod added first (mask NULL: none): this one
 * pattern covers a mask broadcast over leading axes on either side, e.g. (B, 1, 1, n) against
 * (B, H, S, n). y may alias x. */
EXPORT(gp_softmax)
void gp_softmax(const float *x, const float *mask, float *y, int rows, int n, int mask_div, int mask_mod) {
  for (int r = 0; r < rows; r++, x += n, y += n) {
    const float *m = mask ? mask + ((r / mask_div) % mask_mod) * n : 0;
    f4 vmax = splat(-__builtin_inff());
    float smax = -__builtin_inff();
    int i = 0;
    for (; i + 4 <= n; i += 4) vmax = wasm_f32x4_max(vmax, m ? wasm_f32x4_add(ld(x + i), ld(m + i)) : ld(x + i));
    for (; i < n; i++) {
      float z = m ? x[i] + m[i] : x[i];
      smax = z > smax ? z : smax;
    }
    float mx = hmax(vmax);
    mx = smax > mx ? smax : mx;
    f4 vmx = splat(mx), vsum = splat(0.0f);
    float ssum = 0.0f;
    for (i = 0; i + 4 <= n; i += 4) {
      f4 z = m ? wasm_f32x4_add(ld(x + i), ld(m + i)) : ld(x + i);
      f4 e = exp4(wasm_f32x4_sub(z, vmx));
      st(y + i, e);
      vsum = wasm_f32x4_add(vsum, e);
    }
    for (; i < n; i++) {
      float z = m ? x[i] + m[i] : x[i];
      y[i] = wasm_f32x4_extract_lane(exp4(splat(z - mx)), 0);
      ssum += y[i];
    }
    f4 inv = splat(1.0f / (hsum(vsum) + ssum));
    for (i = 0; i + 4 <= n; i += 4) st(y + i, wasm_f32x4_mul(ld(y + i), inv));
    for (; i < n; i++) y[i] *= wasm_f32x4_extract_lane(inv, 0);
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
    f4 vs = splat(0.0f);
    float ss = 0.0f;
    int i = 0;
    for (; i + 4 <= n; i += 4) vs = wasm_f32x4_add(vs, ldz(x, res, i));
    for (; i < n; i++) ss += z1(x, res, i);
    float mean = (hsum(vs) + ss) / (float)n;
    f4 vm = splat(mean), vv = splat(0.0f);
    float sv = 0.0f;
    for (i = 0; i + 4 <= n; i += 4) {
      f4 d = wasm_f32x4_sub(ldz(x, res, i), vm);
      vv = wasm_f32x4_add(vv, wasm_f32x4_mul(d, d));
    }
    for (; i < n; i++) sv += (z1(x, res, i) - mean) * (z1(x, res, i) - mean);
    float var = (hsum(vv) + sv) / (float)n;
    bad += !(var - var == 0.0f && mean - mean == 0.0f);   /* false for an infinity or a NaN */
    f4 inv = wasm_f32x4_div(splat(1.0f), wasm_f32x4_sqrt(splat(var + eps)));
    for (i = 0; i + 4 <= n; i += 4) {
      f4 d = wasm_f32x4_mul(wasm_f32x4_sub(ldz(x, res, i), vm), inv);
      st(y + i, wasm_f32x4_add(wasm_f32x4_mul(d, ld(gamma + i)), ld(beta + i)));
    }
    for (; i < n; i++) y[i] = (z1(x, res, i) - mean) * wasm_f32x4_extract_lane(inv, 0) * gamma[i] + beta[i];
  }
  return bad;
}

EXPORT(gp_layer_norm)
void gp_layer_norm(const float *x, const float *gamma, const float *beta, float *y, int rows, int n, float eps) {
  add_layer_norm(x, 0, gamma, beta, y, rows, n, eps);
}
