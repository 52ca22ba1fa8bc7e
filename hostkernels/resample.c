/* An RGB image resized as Pillow resizes it (Image.resize, 8 bits a channel: libImaging/Resample.c), to the bit,
 * then the model's crop of it rescaled and normalised through a table, in one call: what CLIPImageProcessor and
 * ViTImageProcessor (their PIL backend) make of an image, from its decoded bytes.
 *
 * Pillow's arithmetic, kept exactly: each axis' weights in double precision as precompute_coeffs makes them (the
 * filter's own order of operations; no contraction into fused multiply-adds: the pragma below), normalised to 22
 * fractional bits as normalize_coeffs_8bpc rounds them; the horizontal pass first (the vertical one where the
 * caller's Pillow takes it first: `vertical_first`), its 32-bit integer sums rounded and clipped to bytes, then the
 * other pass over those bytes. Only the crop is made: the columns and rows outside it are never computed, the rows
 * of the source no kept row reads never resampled. Each output is a sum of the same integer products in the same
 * order as Pillow's, so the bytes are its bytes.
 *
 * The source's pixels are `bpp` bytes apart (3: RGB; 4: RGBA as a browser's canvas gives it, the fourth byte
 * ignored). A pixel's three channels are one vector (its fourth lane the next byte, computed and dropped), so a tap
 * is one load, one multiply and one add where Pillow's C makes three of each. The passes split their rows over
 * the pool's threads. */
#include "simd.h"

#pragma clang fp contract(off)

#define PRECISION 22   /* Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */

typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint8_t v4b __attribute__((vector_size(4)));

/* Pillow's filters (2: bilinear, support 1; 3: bicubic with a = -0.5, support 2), its expressions as written. */
INLINE double filter_at(int filter, double x) {
  if (x < 0.0) x = -x;
  if (filter == 2) return x < 1.0 ? 1.0 - x : 0.0;
  if (x < 1.0) return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * -0.5;
  return 0.0;
}

INLINE double scale_of(int in_size, int out_size) { return (double)(float)in_size / out_size; }

INLINE double support_of(int filter, int in_size, int out_size) {
  const double scale = scale_of(in_size, out_size);
  return (filter == 2 ? 1.0 : 2.0) * (scale < 1.0 ? 1.0 : scale);
}

/* Weights an output pixel may have along an axis: Pillow's ksize, (int)ceil(support) * 2 + 1. */
INLINE int taps_of(int filter, int in_size, int out_size) {
  const double support = support_of(filter, in_size, out_size);
  const int whole = (int)support;
  return (whole + (whole < support)) * 2 + 1;
}

/* The inputs output xx of an axis reads: from *first, *count of them (both grow with xx). */
INLINE void bounds_of(int filter, int in_size, int out_size, int xx, int *first, int *count) {
  const double center = 0.0 + (xx + 0.5) * scale_of(in_size, out_size), support = support_of(filter, in_size, out_size);
  int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
  if (xmin < 0) xmin = 0;
  if (xmax > in_size) xmax = in_size;
  *first = xmin;
  *count = xmax - xmin;
}

/* Pillow's weights for outputs o0 .. o0 + n - 1 of an axis resized from in_size to out_size: for output i its
 * inputs (bounds[2i], bounds[2i + 1]: first and count) and their weights k[i * taps ..] in fixed point. The
 * normalising sum is made first and each weight made again after it: the filter is a pure function, so these are
 * the weights Pillow divides, and nothing is held on a stack. */
INLINE void weights(int filter, int in_size, int out_size, int o0, int n, int taps, int *bounds, int32_t *k) {
  const double scale = scale_of(in_size, out_size), inv = 1.0 / (scale < 1.0 ? 1.0 : scale);
  for (int i = 0; i < n; i++, k += taps) {
    const double center = 0.0 + (o0 + i + 0.5) * scale;
    int xmin, count;
    bounds_of(filter, in_size, out_size, o0 + i, &xmin, &count);
    double ww = 0.0;
    for (int x = 0; x < count; x++) ww += filter_at(filter, (x + xmin - center + 0.5) * inv);
    for (int x = 0; x < taps; x++) {
      double w = x < count ? filter_at(filter, (x + xmin - center + 0.5) * inv) : 0.0;
      if (ww != 0.0) w /= ww;
      k[x] = w < 0 ? (int32_t)(-0.5 + w * (1 << PRECISION)) : (int32_t)(0.5 + w * (1 << PRECISION));
    }
    bounds[2 * i] = xmin;
    bounds[2 * i + 1] = count;
  }
}

/* Pillow's clip8: the sum's integer part, clipped to a byte. */
INLINE v4i clipped(v4i acc) {
  return __builtin_elementwise_min(__builtin_elementwise_max(acc >> PRECISION, (v4i){}), (v4i){} + 255);
}

INLINE v4i widen(v4b b) { return __builtin_convertvector(b, v4i); }

/* Four bytes at p as a pixel; `tail`: p may be the buffer's last pixel, read byte by byte. */
INLINE v4i pixel(const uint8_t *p, int tail) {
  if (tail) return (v4i){p[0], p[1], p[2], 0};
  v4b b;
  __builtin_memcpy(&b, p, sizeof b);
  return widen(b);
}

/* One resize in the order its passes run: the first pass along each row of `src` (pixel x of row y at
 * src + y * rs + x * ps: the image itself, or its transpose where Pillow resizes vertically first), the second
 * across them; output (r, x) of each channel plane at out + r * ors + x * ops. */
struct resample {
  const uint8_t *src, *end;     /* end: the source's last byte + 1 (a 4-byte load must stop there) */
  const int *hb, *vb;           /* bounds: first pass (cols), second (rows, made relative to row0) */
  const int32_t *hk, *vk;       /* weights */
  const float *table;           /* 3 x 256: each channel's byte as the model's input */
  uint8_t *tmp;                 /* the first pass: rows row0 .. of the cols, 4 bytes a pixel */
  float *out;
  long rs, ors, ops, plane;
  int ps, row0, cols, htaps, vtaps, x_in, y_in, rows_in, cw, ch;
};

/* The first pass on source rows row0 + lo .. row0 + hi: `cols` outputs each. */
INLINE void first_pass(void *ctx, int lo, int hi, int slot) {
  const struct resample *R = ctx;
  (void)slot;
  for (int y = lo; y < hi; y++) {
    const uint8_t *in = R->src + (R->row0 + y) * R->rs;
    uint8_t *o = R->tmp + (long)y * R->cols * 4;
    for (int i = 0; i < R->cols; i++, o += 4) {
      const int32_t *k = R->hk + (long)i * R->htaps;
      const int n = R->hb[2 * i + 1];
      const uint8_t *p = in + (long)R->ps * R->hb[2 * i];
      v4i acc = (v4i){} + (1 << (PRECISION - 1));
      if (p + (long)R->ps * (n - 1) + 4 > R->end) {   /* its last tap is the source's last pixel */
        for (int t = 0; t < n; t++, p += R->ps) acc += pixel(p, t == n - 1) * k[t];
      } else {
        for (int t = 0; t < n; t++, p += R->ps) acc += pixel(p, 0) * k[t];
      }
      v4b b = __builtin_convertvector(clipped(acc), v4b);
      __builtin_memcpy(o, &b, sizeof b);
    }
  }
}

/* Byte 0 of every channel through the table at output (r, x): transformers pads a crop larger than the resized
 * image with zeros before it rescales. */
INLINE void pad(const struct resample *R, float *o) {
  o[0] = R->table[0];
  o[R->plane] = R->table[256];
  o[2 * R->plane] = R->table[512];
}

/* The second pass for output rows lo .. hi of the crop, each pixel through the table. */
INLINE void second_pass(void *ctx, int lo, int hi, int slot) {
  const struct resample *R = ctx;
  (void)slot;
  for (int r = lo; r < hi; r++) {
    float *row = R->out + r * R->ors;
    const int yi = r - R->y_in;
    if (yi < 0 || yi >= R->rows_in) {
      for (int x = 0; x < R->cw; x++) pad(R, row + x * R->ops);
      continue;
    }
    const int32_t *k = R->vk + (long)yi * R->vtaps;
    const int first = R->vb[2 * yi], n = R->vb[2 * yi + 1];
    for (int x = 0; x < R->cw; x++) {
      float *o = row + x * R->ops;
      const int xi = x - R->x_in;
      if (xi < 0 || xi >= R->cols) {
        pad(R, o);
        continue;
      }
      const uint8_t *p = R->tmp + ((long)first * R->cols + xi) * 4;
      v4i acc = (v4i){} + (1 << (PRECISION - 1));
      for (int t = 0; t < n; t++, p += (long)R->cols * 4) acc += pixel(p, 0) * k[t];
      const v4i v = clipped(acc);
      o[0] = R->table[v[0]];
      o[R->plane] = R->table[256 + v[1]];
      o[2 * R->plane] = R->table[512 + v[2]];
    }
  }
}

/* The crop's part inside the resized image along an axis: its first index there (*first) and how many (*n), and
 * where in the crop they begin (*at). */
INLINE void inside(int x0, int size, int out_size, int *first, int *n, int *at) {
  const int a = x0 < 0 ? 0 : x0, b = x0 + size > out_size ? out_size : x0 + size;
  *first = a;
  *n = b > a ? b - a : 0;
  *at = a - x0;
}

/* The source rows the crop's rows read: from *row0, *count of them. */
INLINE void source_rows(int filter, int h, int out_h, int row_first, int rows, int *row0, int *count) {
  int f0, n0, f1, n1;
  if (rows == 0) {
    *row0 = *count = 0;
    return;
  }
  bounds_of(filter, h, out_h, row_first, &f0, &n0);
  bounds_of(filter, h, out_h, row_first + rows - 1, &f1, &n1);
  *row0 = f0;
  *count = f1 + n1 - f0;
}

/* The resize in its passes' order: Pillow 13 and later resize vertically first where the height shrinks and the
 * width grows (`vertical_first`), which is the same resize of the transposed image. */
struct plan {
  int w, h, out_w, out_h, x0, y0, cw, ch, col0, cols, x_in, row_first, rows, y_in, row0, src_rows, htaps, vtaps;
};

INLINE struct plan plan_of(int w, int h, int out_w, int out_h, int x0, int y0, int cw, int ch, int filter,
                           int vertical_first) {
  struct plan P = {.w = w, .h = h, .out_w = out_w, .out_h = out_h, .x0 = x0, .y0 = y0, .cw = cw, .ch = ch};
  if (vertical_first)
    P = (struct plan){.w = h, .h = w, .out_w = out_h, .out_h = out_w, .x0 = y0, .y0 = x0, .cw = ch, .ch = cw};
  inside(P.x0, P.cw, P.out_w, &P.col0, &P.cols, &P.x_in);
  inside(P.y0, P.ch, P.out_h, &P.row_first, &P.rows, &P.y_in);
  source_rows(filter, P.h, P.out_h, P.row_first, P.rows, &P.row0, &P.src_rows);
  P.htaps = taps_of(filter, P.w, P.out_w);
  P.vtaps = taps_of(filter, P.h, P.out_h);
  return P;
}

int gp_resample_scratch(int w, int h, int out_w, int out_h, int x0, int y0, int cw, int ch, int filter,
                        int vertical_first) {
  const struct plan P = plan_of(w, h, out_w, out_h, x0, y0, cw, ch, filter, vertical_first);
  return P.cols * (P.htaps + 2) + P.rows * (P.vtaps + 2) + P.src_rows * P.cols;
}

void gp_resample_image(const uint8_t *src, int w, int h, int bpp, int out_w, int out_h, int x0, int y0, int cw,
                       int ch, int filter, int vertical_first, const float *table, float *out, float *scratch,
                       int threads) {
  const struct plan P = plan_of(w, h, out_w, out_h, x0, y0, cw, ch, filter, vertical_first);
  int *hb = (int *)scratch, *vb = hb + P.cols * (P.htaps + 2);
  int32_t *hk = hb + 2 * P.cols, *vk = vb + 2 * P.rows;
  weights(filter, P.w, P.out_w, P.col0, P.cols, P.htaps, hb, hk);
  weights(filter, P.h, P.out_h, P.row_first, P.rows, P.vtaps, vb, vk);
  for (int i = 0; i < P.rows; i++) vb[2 * i] -= P.row0;
  const long row_bytes = (long)bpp * w;
  struct resample R = {src, src + row_bytes * h, hb, vb, hk, vk, table, (uint8_t *)(vb + P.rows * (P.vtaps + 2)),
                       out, vertical_first ? bpp : row_bytes, vertical_first ? 1 : cw, vertical_first ? cw : 1,
                       (long)cw * ch, vertical_first ? (int)row_bytes : bpp, P.row0, P.cols, P.htaps, P.vtaps,
                       P.x_in, P.y_in, P.rows, P.cw, P.ch};
  if (threads < 1) threads = 1;
  if (P.cols > 0) gp_parallel(threads, P.src_rows, 4 * threads, first_pass, &R);
  gp_parallel(threads, P.ch, 4 * threads, second_pass, &R);
}
