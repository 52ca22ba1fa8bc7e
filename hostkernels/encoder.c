/* A whole transformer encoder layer in one call, so a model's forward crosses from Python into the kernels
 * once per layer rather than once per op (in a page each crossing costs tens of microseconds of Python and
 * JavaScript: for a short sentence more than the arithmetic). BERT's post-norm block:
 *
 *   qkv = x Wqkv^T + bqkv          one product for Q, K and V (their weights stacked, packed with the bias)
 *   a   = attention(q, k, v, mask) the heads read straight out of qkv's column blocks
 *   x   = LayerNorm(a Wo^T + bo + x)
 *   x   = LayerNorm(act(x Wi^T + bi) Wo2^T + bo2 + x)
 *
 * or with GP_PRE_NORM the pre-norm block of CLIP's and ViT's towers:
 *
 *   x   = x + attention(LayerNorm(x) Wqkv^T + bqkv) Wo^T + bo
 *   x   = x + act(LayerNorm(x) Wi^T + bi) Wo2^T + bo2
 *
 * act is exact GELU, or QuickGELU with GP_QUICK_GELU; GP_CAUSAL lets query i see keys 0..i only. Every step is
 * the kernel the single ops use (gp_matmul_packed, gp_attention, gp_gelu, gp_quick_gelu, add_layer_norm), so
 * the results are the same numbers the op-by-op path gives, however many threads share the work. */
#include "simd.h"

/* gp_encoder_layer's flags; GP_KEEP_FIRST and GP_KEEP_LAST: see keep_rows. */
enum { GP_PRE_NORM = 1, GP_QUICK_GELU = 2, GP_CAUSAL = 4, GP_KEEP_FIRST = 8, GP_KEEP_LAST = 16 };

/* A thread's attention scratch: gp_attention's, and with a shared prefix room for one sequence's rows of Q, K and V
 * and its attention output (prefixed_heads). */
static int attention_floats(int S, int H, int heads, int prefix) {
  return gp_attention_scratch(S, H / heads) + (prefix ? 4 * S * H : 0);
}

/* Floats of scratch gp_encoder_layer needs for n tokens, sequences of S at most (a shared prefix's included), on
 * `threads` threads. */
int gp_encoder_scratch(int n, int S, int H, int heads, int F, int prefix, int threads) {
  return n * (3 * H + H + F) + (threads > 1 ? threads : 1) * attention_floats(S, H, heads, prefix);
}

struct layer {
  float *x, *qkv, *a, *f, *attn;
  int B, S, H, heads, F, n, attn_floats, flags, prefix;
  const int *lengths;
  const float *mask, *wqkv, *wo, *wi, *wo2, *ln1_g, *ln1_b, *ln2_g, *ln2_b;
  float eps;
  int bad; /* atomic natively */
};

/* The activation after the first FFN product, in place on n floats. */
static void activate(const struct layer *L, float *f, int n) {
  if (L->flags & GP_QUICK_GELU)
    gp_quick_gelu(f, f, n);
  else
    gp_gelu(f, f, n);
}

/* x += o, rows of H. */
static void add_rows(float *x, const float *o, int n) {
  for (int i = 0; i < n; i++) x[i] += o[i];
}

static void count_bad(struct layer *L, int bad) {
#if defined(__wasm__) && !defined(__wasm_atomics__)
  L->bad += bad;   /* one thread; an atomic would keep L in memory (a shadow stack) */
#else
  if (bad) __atomic_fetch_add(&L->bad, bad, __ATOMIC_RELAXED);
#endif
}

/* Rows [lo, hi) in units of MR (a part never splits a register tile). */
#define ROWS(L, lo, hi) int r0 = (lo) * MR, r1 = min_i((hi) * MR, (L)->n), m = r1 - r0

/* The QKV product of rows [lo, hi); pre-norm: of their first layer norm, made in a's rows (free until attention). */
static void qkv_rows(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  ROWS(L, lo, hi);
  (void)slot;
  const float *in = L->x + r0 * L->H;
  if (L->flags & GP_PRE_NORM) {
    count_bad(L, add_layer_norm(in, 0, L->ln1_g, L->ln1_b, L->a + r0 * L->H, m, L->H, L->eps));
    in = L->a + r0 * L->H;
  }
  gp_matmul_packed(in, m, L->H, L->H, L->wqkv, 3 * L->H, L->qkv + r0 * 3 * L->H, 3 * L->H);
}

/* With a shared prefix (texts that begin alike, causal): QKV rows of heads [lo, hi) of the prefix's P rows, then of
 * the sequence's `len` rows from `start`, copied into one run of rows in buf (Q, K, V each w = (hi - lo) d wide),
 * so the sequence's queries see the keys, in the order, they would in a sequence of its own: the same numbers for
 * the same rows (the prefix's own rows, made against its keys alone, may round a softmax sum otherwise: within a
 * float32 ulp). Returns the run's row width, 3 w. Inlined, as attention_heads is. */
INLINE int prefixed_rows(const struct layer *L, long start, int len, int lo, int hi, float *buf) {
  const int H = L->H, d = H / L->heads, off = lo * d, w = (hi - lo) * d;
  for (int i = 0; i < L->prefix + len; i++) {
    const float *src = L->qkv + (i < L->prefix ? i : start + i - L->prefix) * 3L * H + off;
    float *dst = buf + (long)i * 3 * w;
    for (int part = 0; part < 3; part++)
      for (int j = 0; j < w; j++) dst[part * w + j] = src[part * H + j];
  }
  return 3 * w;
}

/* Heads [lo, hi) of sequence rows [start, start + len) after the shared prefix: the run of rows prefixed_rows makes
 * through causal attention, its last len rows kept (the prefix's own were made once, in attention_heads). */
INLINE void prefixed_heads(const struct layer *L, long start, int len, int lo, int hi, float *scratch) {
  const int H = L->H, d = H / L->heads, w = (hi - lo) * d, S = L->prefix + len;
  float *buf = scratch + gp_attention_scratch(L->S, d), *out = buf + 3L * L->S * H;
  const int ld = prefixed_rows(L, start, len, lo, hi, buf);
  gp_attention(buf, buf + w, buf + 2 * w, ld, 0, out, w, 1, S, S, hi - lo, d, 1, scratch);
  for (int i = 0; i < len; i++)
    for (int j = 0; j < w; j++) L->a[(start + i) * H + lo * d + j] = out[(long)(L->prefix + i) * w + j];
}

/* Heads [lo, hi) of every sequence: a range of heads is a range of columns. Sequences of their own lengths lie
 * one after another, each attending within itself (and to the shared prefix before them). Always inlined: in the
 * one-thread WebAssembly build a call left out of line would keep the layer's struct on a shadow stack. */
INLINE void attention_heads(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  const int H = L->H, d = H / L->heads, off = lo * d, causal = (L->flags & GP_CAUSAL) != 0;
  float *scratch = L->attn + slot * L->attn_floats;
  if (!L->lengths) {
    gp_attention(L->qkv + off, L->qkv + H + off, L->qkv + 2 * H + off, 3 * H, L->mask, L->a + off, H, L->B, L->S,
                 L->S, hi - lo, d, causal, scratch);
    return;
  }
  if (L->prefix)
    gp_attention(L->qkv + off, L->qkv + H + off, L->qkv + 2 * H + off, 3 * H, 0, L->a + off, H, 1, L->prefix,
                 L->prefix, hi - lo, d, 1, scratch);
  for (int b = 0, row = L->prefix; b < L->B; row += L->lengths[b++]) {
    if (L->prefix) {
      prefixed_heads(L, row, L->lengths[b], lo, hi, scratch);
      continue;
    }
    const float *qkv = L->qkv + (long)row * 3 * H + off;
    gp_attention(qkv, qkv + H, qkv + 2 * H, 3 * H, 0, L->a + (long)row * H + off, H, 1, L->lengths[b],
                 L->lengths[b], hi - lo, d, causal, scratch);
  }
}

/* Everything after attention needs only the row itself: output projection, residual and norm, FFN,
 * residual and norm. The projections go to the row's own place in qkv (free again). */
static void tail_rows(void *ctx, int lo, int hi, int slot) {
  struct layer *L = ctx;
  ROWS(L, lo, hi);
  (void)slot;
  const int H = L->H, F = L->F;
  float *x = L->x + r0 * H, *o = L->qkv + r0 * H, *f = L->f + r0 * F, *a = L->a + r0 * H;
  gp_matmul_packed(a, m, H, H, L->wo, H, o, H);
  int bad;
  if (L->flags & GP_PRE_NORM) {   /* a's rows, read, take the second layer norm */
    add_rows(x, o, m * H);
    bad = add_layer_norm(x, 0, L->ln2_g, L->ln2_b, a, m, H, L->eps);
    gp_matmul_packed(a, m, H, H, L->wi, F, f, F);
    activate(L, f, m * F);
    gp_matmul_packed(f, m, F, F, L->wo2, H, o, H);
    add_rows(x, o, m * H);
  } else {
    bad = add_layer_norm(o, x, L->ln1_g, L->ln1_b, x, m, H, L->eps);
    gp_matmul_packed(x, m, H, H, L->wi, F, f, F);
    activate(L, f, m * F);
    gp_matmul_packed(f, m, F, F, L->wo2, H, o, H);
    bad += add_layer_norm(o, x, L->ln2_g, L->ln2_b, x, m, H, L->eps);
  }
  count_bad(L, bad);
}

/* The form of the same layer up to COLUMN_ROWS rows (a sentence, an image's 50 patches, 16 images' 800).
 * Split by rows, each of the 4 x threads parts would stream every weight once more, and a layer of a few hundred
 * rows is bound by reading its weights (7 MB for MiniLM's, 28 MB for ViT-B's, past the L2): so each product is
 * split by its packed weight's column panels instead, and every thread reads its share of them once. The same
 * tiles and the same order of the sums: the same numbers as by rows, to the bit. The layer norms between
 * products run on the caller (a fraction of a millisecond for 800 rows). Measured natively at 2 threads against
 * the row form: 1.66x for ViT-B/32's 50 rows, 1.14x for 256, 1.03x for 800. Past COLUMN_ROWS (a long batch
 * of sentences) the row form keeps a part's intermediate rows in its core's cache. */
#define COLUMN_ROWS 1024
struct product {
  const float *a, *packed;
  float *c;
  int M, K, N, act;   /* after the product: 0 nothing, 1 GELU, 2 QuickGELU */
};

static void product_cols(void *ctx, int lo, int hi, int slot) {
  const struct product *P = ctx;
  (void)slot;
  const int c0 = lo * NR, w = min_i(hi * NR, P->N) - c0;
  gp_matmul_packed(P->a, P->M, P->K, P->K, P->packed + (long)lo * panel_floats(P->K), w, P->c + c0, P->N);
  for (int r = 0; P->act && r < P->M; r++) {
    float *row = P->c + r * P->N + c0;
    if (P->act == 2)
      gp_quick_gelu(row, row, w);
    else
      gp_gelu(row, row, w);
  }
}

/* Natively 12 parts a thread: the threads meet after every product, and the last part's time is what one waits for
 * the other (2 threads, worker processes alternating, 5 runs: MiniLM's sentence 4.8-5.2 -> 4.7-4.9 ms with 12
 * against 4, 8 sentences 11.4-13.2 -> 11.1-11.3; 256 tokens the same; 24 no better). In the page's pool 4: with 12,
 * CLIP's runs moved within their spread (16 images 1622, 1703, 1669 ms for 12, 4, 12) and MiniLM's sentence took
 * 7.2-12.6 ms (6.3-12 before), not an A/B either way. */
#ifdef __wasm__
#define PARTS_PER_THREAD 4
#else
#define PARTS_PER_THREAD 12
#endif
static void product(int threads, const float *a, int M, int K, const float *packed, int N, float *c, int act) {
  struct product P = {a, packed, c, M, K, N, act};
  const int panels = (N + NR - 1) / NR;
  gp_parallel(threads, panels, PARTS_PER_THREAD * threads, product_cols, &P);
}

/* What follows attention on the first `n` rows of x and a (attention's output): the output projection, residual and
 * norm, the FFN, residual and norm, each product split by columns. */
INLINE int tail_columns(struct layer *L, int threads, int n) {
  const int H = L->H, F = L->F, act = (L->flags & GP_QUICK_GELU) ? 2 : 1;
  float *o = L->qkv;   /* free again once attention has read it */
  int bad = 0;
  product(threads, L->a, n, H, L->wo, H, o, 0);
  if (L->flags & GP_PRE_NORM) {
    add_rows(L->x, o, n * H);
    bad += add_layer_norm(L->x, 0, L->ln2_g, L->ln2_b, L->a, n, H, L->eps);
    product(threads, L->a, n, H, L->wi, F, L->f, act);
    product(threads, L->f, n, F, L->wo2, H, o, 0);
    add_rows(L->x, o, n * H);
    return bad;
  }
  bad = add_layer_norm(o, L->x, L->ln1_g, L->ln1_b, L->x, n, H, L->eps);
  product(threads, L->x, n, H, L->wi, F, L->f, act);
  product(threads, L->f, n, F, L->wo2, H, o, 0);
  return bad + add_layer_norm(o, L->x, L->ln2_g, L->ln2_b, L->x, n, H, L->eps);
}

/* The QKV product of every row; pre-norm: of their first layer norm, made in a. */
INLINE int qkv_columns(struct layer *L, int threads) {
  int bad = 0;
  const float *in = L->x;
  if (L->flags & GP_PRE_NORM) {
    bad = add_layer_norm(L->x, 0, L->ln1_g, L->ln1_b, L->a, L->n, L->H, L->eps);
    in = L->a;
  }
  product(threads, in, L->n, L->H, L->wqkv, 3 * L->H, L->qkv, 0);
  return bad;
}

INLINE int by_columns(struct layer *L, int threads) {
  int bad = qkv_columns(L, threads);
  gp_parallel(threads, L->heads, L->heads, attention_heads, L);
  return bad + tail_columns(L, threads, L->n);
}

/* A tower's last layer, whose caller reads one row of each sequence (GP_KEEP_FIRST: its first, a class token;
 * GP_KEEP_LAST: its last, with `lengths` a text's pooled end-of-text): every row's keys and values, then that row
 * alone through attention (its own query, against the keys it sees) and the rest of the layer: an image's 50
 * rows make 9/12 of the layer's products for one. The B rows come back as x's first B rows. */
INLINE int keep_rows(struct layer *L, int threads) {
  const int H = L->H, d = H / L->heads, P = L->prefix;
  int bad = qkv_columns(L, threads);
  for (int b = 0, start = P, len; b < L->B; b++, start += len) {
    len = L->lengths ? L->lengths[b] : L->S;
    const int r = (L->flags & GP_KEEP_LAST) ? len - 1 : 0;
    const float *seq = L->qkv + (long)start * 3 * H;
    int ld = 3 * H, w = H;
    if (P) {   /* the prefix's keys and the sequence's in one run (prefixed_rows), the kept row at P + r of it */
      float *run = L->attn + gp_attention_scratch(L->S, d);
      ld = prefixed_rows(L, start, r + 1, 0, L->heads, run);
      seq = run;
      w = ld / 3;
    }
    gp_attention(seq + (long)(P + r) * ld, seq + w, seq + 2 * w, ld, L->mask ? L->mask + (long)b * L->S : 0,
                 L->a + (long)b * H, H, 1, 1, (L->flags & GP_CAUSAL) ? P + r + 1 : len, L->heads, d, 0, L->attn);
    /* row start + r >= b: never one an earlier sequence's copy wrote */
    for (int j = 0; j < H; j++) L->x[(long)b * H + j] = L->x[(long)(start + r) * H + j];
  }
  return bad + tail_columns(L, threads, L->B);
}

/* x (B, S, H) is replaced by the layer's output; or with `lengths` (B of them, none past S) x holds B sequences
 * of those lengths one after another (a batch without padding: no row is computed that nobody reads), and mask
 * must be NULL; with `prefix` > 0 (causal only) x's first `prefix` rows are a start every sequence shares, made
 * once (texts that begin alike: a template's words, every text's first token), the sequences after them, S at
 * most prefix + the longest length. Weights are packed (gp_pack_b, transposed, bias folded): wqkv 3H x H, wo H x H,
 * wi F x H, wo2 H x F. mask (B, S) additive or NULL; flags: GP_PRE_NORM, GP_QUICK_GELU, GP_CAUSAL (above), and
 * GP_KEEP_FIRST or GP_KEEP_LAST: only each sequence's first or last row is made past the QKV product, and those
 * B rows come back as x's first B rows (keep_rows). Natively and in the threaded build the work is spread over
 * `threads` threads (pool.c): in three phases (the QKV product by rows, attention by heads, the rest by rows), or
 * up to COLUMN_ROWS rows each product by columns (by_columns). Returns the number of rows whose layer-norm
 * statistics were not finite (0 when all is well); their values are not to be trusted and the caller recomputes
 * the layer op by op, where NumPy owns the IEEE edge cases. */
int gp_encoder_layer(float *x, int B, int S, int H, int heads, int F, const float *mask, const int *lengths,
                     int prefix, const float *wqkv, const float *wo, const float *wi, const float *wo2,
                     const float *ln1_g, const float *ln1_b, const float *ln2_g, const float *ln2_b, float eps,
                     int flags, float *scratch, int threads) {
  int n = B * S;
  if (lengths) {
    n = prefix;
    for (int b = 0; b < B; b++) n += lengths[b];
  }
  const int tiles = (n + MR - 1) / MR;
  if (threads < 1) threads = 1;
  struct layer L = {x, scratch, scratch + n * 3 * H, scratch + n * 4 * H, scratch + n * (4 * H + F), B, S, H,
                    heads, F, n, attention_floats(S, H, heads, prefix), flags, prefix, lengths, mask, wqkv, wo, wi,
                    wo2, ln1_g, ln1_b, ln2_g, ln2_b, eps, 0};
  if (flags & (GP_KEEP_FIRST | GP_KEEP_LAST)) return keep_rows(&L, threads);
  if (threads > 1 && n <= COLUMN_ROWS) return by_columns(&L, threads);
  /* Several parts per thread, taken as threads come free: a late or descheduled thread delays one small
   * part, not a share fixed in advance. Row parts are whole 4-row tiles, attention parts single heads. */
  gp_parallel(threads, tiles, 4 * threads, qkv_rows, &L);
  gp_parallel(threads, heads, heads, attention_heads, &L);
  gp_parallel(threads, tiles, 4 * threads, tail_rows, &L);
  return L.bad;
}
