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
 * add_layer_norm), so the results are the same numbers the op-by-op path gives, however many threads
 * share the work. */
#include "simd.h"

/* Floats of scratch gp_encoder_layer needs for n = B * S tokens on `threads` threads. */
int gp_encoder_scratch(int n, int S, int H, int heads, int F, int threads) {
  return n * (3 * H + H + F) + (threads > 1 ? threads : 1) * gp_attention_scratch(S, H / heads);
}

struct layer {
  float *x, *qkv, *a, *f, *attn;
  int B, S, H, heads, F, n, attn_floats;
  const float *mask, *wqkv, *wo, *wi, *wo2, *ln1_g, *ln1_b, *ln2_g, *ln2_b;
  float eps;
  int bad; /* atomic natively */
};

/* Rows [lo, hi) in units of MR (a part never splits a register tile). */
#define ROWS(L, lo, hi) int r0 = (lo) * MR, r1 = min_i((hi) * MR, (L)->n), m = r1 - r0

static void qkv_rows(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  ROWS(L, lo, hi);
  (void)slot;
  gp_matmul_packed(L->x + r0 * L->H, m, L->H, L->H, L->wqkv, 3 * L->H, L->qkv + r0 * 3 * L->H, 3 * L->H);
}

/* Heads [lo, hi) of every sequence: a range of heads is a range of columns. */
static void attention_heads(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  const int H = L->H, d = H / L->heads, off = lo * d;
  gp_attention(L->qkv + off, L->qkv + H + off, L->qkv + 2 * H + off, 3 * H, L->mask, L->a + off, H, L->B, L->S,
               L->S, hi - lo, d, L->attn + slot * L->attn_floats);
}

/* Everything after attention needs only the row itself: output projection, residual and norm, FFN,
 * residual and norm. The projections go to the row's own place in qkv (free again). */
static void tail_rows(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  ROWS(L, lo, hi);
  (void)slot;
  const int H = L->H, F = L->F;
  float *x = L->x + r0 * H, *o = L->qkv + r0 * H, *f = L->f + r0 * F;
  gp_matmul_packed(L->a + r0 * H, m, H, H, L->wo, H, o, H);
  int bad = add_layer_norm(o, x, L->ln1_g, L->ln1_b, x, m, H, L->eps);
  gp_matmul_packed(x, m, H, H, L->wi, F, f, F);
  gp_gelu(f, f, m * F);
  gp_matmul_packed(f, m, F, F, L->wo2, H, o, H);
  bad += add_layer_norm(o, x, L->ln2_g, L->ln2_b, x, m, H, L->eps);
#if defined(__wasm__) && !defined(__wasm_atomics__)
  L->bad += bad;   /* one thread; an atomic would keep L in memory (a shadow stack) */
#else
  if (bad) __atomic_fetch_add(&L->bad, bad, __ATOMIC_RELAXED);
#endif
}

/* The few-rows form of the same layer (a lone sentence: a handful of 4-row tiles). Split by rows, each part
 * would stream every weight once more, and a short layer is bound by reading its weights (about 7 MB, 87 MB
 * for MiniLM's six, past the L3): so each product is split by its packed weight's column panels instead,
 * and every thread reads its share of them. The same tiles and the same order of the sums: the same
 * numbers as by rows, to the bit. The layer norms between products take microseconds on the caller. */
struct product {
  const float *a, *packed;
  float *c;
  int M, K, N, gelu;
};

static void product_cols(void *ctx, int lo, int hi, int slot) {
  const struct product *P = ctx;
  (void)slot;
  const int c0 = lo * NR, w = min_i(hi * NR, P->N) - c0;
  gp_matmul_packed(P->a, P->M, P->K, P->K, P->packed + (long)lo * panel_floats(P->K), w, P->c + c0, P->N);
  if (P->gelu)
    for (int r = 0; r < P->M; r++) gp_gelu(P->c + r * P->N + c0, P->c + r * P->N + c0, w);
}

static void product(int threads, const float *a, int M, int K, const float *packed, int N, float *c, int gelu) {
  struct product P = {a, packed, c, M, K, N, gelu};
  const int panels = (N + NR - 1) / NR;
  gp_parallel(threads, panels, 4 * threads, product_cols, &P);
}

static int few_rows(struct layer *L, int threads) {
  const int H = L->H, F = L->F, n = L->n;
  float *o = L->qkv;   /* free again once attention has read it */
  product(threads, L->x, n, H, L->wqkv, 3 * H, L->qkv, 0);
  gp_parallel(threads, L->heads, L->heads, attention_heads, L);
  product(threads, L->a, n, H, L->wo, H, o, 0);
  int bad = add_layer_norm(o, L->x, L->ln1_g, L->ln1_b, L->x, n, H, L->eps);
  product(threads, L->x, n, H, L->wi, F, L->f, 1);
  product(threads, L->f, n, F, L->wo2, H, o, 0);
  return bad + add_layer_norm(o, L->x, L->ln2_g, L->ln2_b, L->x, n, H, L->eps);
}

/* x (B, S, H) is replaced by the layer's output. Weights are packed (gp_pack_b, transposed, bias folded):
 * wqkv 3H x H, wo H x H, wi F x H, wo2 H x F. mask (B, S) additive or NULL. Natively and in the threaded
 * build the work is spread over `threads` threads (pool.c): in three phases (the QKV product by rows,
 * attention by heads, the rest by rows), or for fewer than 4 tiles a thread, each product by columns
 * (few_rows). Returns the number of rows whose layer-norm statistics were not finite (0 when all is well);
 * their values are not to be trusted and the caller recomputes the layer op by op, where NumPy owns the
 * IEEE edge cases. */
int gp_encoder_layer(float *x, int B, int S, int H, int heads, int F, const float *mask, const float *wqkv,
                     const float *wo, const float *wi, const float *wo2, const float *ln1_g, const float *ln1_b,
                     const float *ln2_g, const float *ln2_b, float eps, float *scratch, int threads) {
  const int n = B * S, tiles = (n + MR - 1) / MR;
  if (threads < 1) threads = 1;
  struct layer L = {x, scratch, scratch + n * 3 * H, scratch + n * 4 * H, scratch + n * (4 * H + F), B, S, H,
                    heads, F, n, gp_attention_scratch(S, H / heads), mask, wqkv, wo, wi, wo2, ln1_g, ln1_b,
                    ln2_g, ln2_b, eps, 0};
  if (threads > 1 && tiles < 4 * threads) return few_rows(&L, threads);
  /* Several parts per thread, taken as threads come free: a late or descheduled thread delays one small
   * part, not a share fixed in advance. Row parts are whole 4-row tiles, attention parts single heads. */
  gp_parallel(threads, tiles, 4 * threads, qkv_rows, &L);
  gp_parallel(threads, heads, heads, attention_heads, &L);
  gp_parallel(threads, tiles, 4 * threads, tail_rows, &L);
  return L.bad;
}
