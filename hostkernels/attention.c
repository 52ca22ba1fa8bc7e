/* Fused multi-head attention, per batch and head: scores = q k^T / sqrt(d) + mask, softmax over keys,
 * times v. K^T (pre-scaled, with the mask as its bias row) and V are packed into matmul panels once per
 * head, then MR query rows at a time go through scores, softmax and the weighted sum while their score
 * rows are still in L1: the same register tiles as the matmul, no (Sq x Sk) matrix in memory. */
#include "simd.h"

/* Floats of scratch gp_attention needs. */
int gp_attention_scratch(int Sk, int d) {
  return ((Sk + NR - 1) / NR) * panel_floats(d) + ((d + NR - 1) / NR) * panel_floats(Sk) + MR * Sk;
}

/* q (B, Sq, .) with rows `ld` floats apart, k and v (B, Sk, .) likewise; the heads' d-wide column blocks start
 * at column 0 of each row (heads * d <= ld: q, k and v may be column blocks of one fused QKV product, or a
 * caller may hand over a range of heads by offsetting the pointers). mask (B, Sk) additive or NULL; `causal`:
 * query i sees keys 0..i only (a text tower's). Writes out (B, Sq, .) with rows `ldo` floats apart, the same
 * columns. */
void gp_attention(const float *q, const float *k, const float *v, int ld, const float *mask, float *out, int ldo,
                  int B, int Sq, int Sk, int heads, int d, int causal, float *scratch) {
  const float scale = 1.0f / __builtin_sqrtf((float)d);
  float *kp = scratch;
  float *vp = kp + ((Sk + NR - 1) / NR) * panel_floats(d);
  float *s = vp + ((d + NR - 1) / NR) * panel_floats(Sk);
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < heads; h++) {
      const int off = h * d;
      /* K^T as a d x Sk "B" matrix: element (dim, key j) sits at k[b, j, off + dim]. */
      pack(k + b * Sk * ld + off, d, Sk, 1, ld, scale, mask ? mask + b * Sk : 0, 1, kp);
      pack(v + b * Sk * ld + off, Sk, d, ld, 1, 1.0f, 0, 0, vp);
      for (int m0 = 0; m0 < Sq; m0 += MR) {
        const int rows = min_i(MR, Sq - m0);
        const float *qr = q + (b * Sq + m0) * ld + off;
        const float *panel = kp;
        for (int n0 = 0; n0 < Sk; n0 += NR, panel += panel_floats(d))
          panel_rows(qr, rows, ld, panel, d, s + n0, Sk, min_i(NR, Sk - n0));
        if (causal)
          for (int r = 0; r < rows; r++)
            for (int j = m0 + r + 1; j < Sk; j++) s[r * Sk + j] = -__builtin_inff();
        gp_softmax(s, 0, s, rows, Sk, 1, 1);
        panel = vp;
        for (int n0 = 0; n0 < d; n0 += NR, panel += panel_floats(Sk))
          panel_rows(s, rows, Sk, panel, Sk, out + (b * Sq + m0) * ldo + off + n0, ldo, min_i(NR, d - n0));
      }
    }
  }
}
