/* A whole transformer encoder layer (BERT's post-norm block) in one call, so a model's forward crosses
 * from Python into the kernels once per layer rather than once per op (in a page each crossing costs
 * tens of microseconds of Python and JavaScript: for a short sentence more than the arithmetic):
 *
 *   qkv = x Wqkv^T + bqkv          one product for Q, K and V (their weights stacked, packed with the bias)
 *   a   = attention(q, k, v, mask) the heads read straight out of qkv's column blocks
 *   x   = LayerNorm(a Wo^T + bo + x)
 *   x   = LayerNorm(gelu(x Wi^T + bi) Wo2^T + bo2 + x)
 *
 * Every step is the kernel the single ops use (gp_matmul_packed, gp_attention, gp_gelu,
 * add_layer_norm), so the results are the same numbers the op-by-op path gives. */
#include "simd.h"

/* Floats of scratch gp_encoder_layer needs for n = B * S tokens. */
EXPORT(gp_encoder_scratch) int gp_encoder_scratch(int n, int S, int H, int heads, int F) {
  return n * (3 * H + H + F) + gp_attention_scratch(S, H / heads);
}

/* x (B, S, H) is replaced by the layer's output. Weights are packed (gp_pack_b, transposed, bias folded):
 * wqkv 3H x H, wo H x H, wi F x H, wo2 H x F. mask (B, S) additive or NULL. Returns the number of rows
 * whose layer-norm statistics were not finite (0 when all is well); their values are not to be trusted
 * and the caller recomputes the layer op by op, where NumPy owns the IEEE edge cases. */
EXPORT(gp_encoder_layer)
int gp_encoder_layer(float *x, int B, int S, int H, int heads, int F, const float *mask, const float *wqkv,
                     const float *wo, const float *wi, const float *wo2, const float *ln1_g, const float *ln1_b,
                     const float *ln2_g, const float *ln2_b, float eps, float *scratch) {
  const int n = B * S;
  float *qkv = scratch, *a = qkv + n * 3 * H, *f = a + n * H, *attn = f + n * F;
  gp_matmul_packed(x, n, H, H, wqkv, 3 * H, qkv, 3 * H);
  gp_attention(qkv, qkv + H, qkv + 2 * H, 3 * H, mask, a, H, B, S, S, heads, H / heads, attn);
  gp_matmul_packed(a, n, H, H, wo, H, qkv, H);            /* qkv is free again: the projection goes there */
  int bad = add_layer_norm(qkv, x, ln1_g, ln1_b, x, n, H, eps);
  gp_matmul_packed(x, n, H, H, wi, F, f, F);
  gp_gelu(f, f, n * F);
  gp_matmul_packed(f, n, F, F, wo2, H, qkv, H);
  return bad + add_layer_norm(qkv, x, ln2_g, ln2_b, x, n, H, eps);
}
