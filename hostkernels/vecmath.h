/* The row-wise kernels' vector arithmetic for one vector type, written once on clang's generic vectors:
 * rowwise.c includes this twice, for its wide type (VW lanes: 4 in WebAssembly, the CPU's full width
 * natively) and for 4 lanes (what is left of a row after the wide loop). Before each inclusion it defines
 * VT (the float vector), VI (the int32 vector of as many lanes), VN (lanes) and V(name) (the suffixed
 * name of each function). Comparisons select with bitwise masks, so a NaN operand propagates wherever the
 * reference propagates it (x86's max/min would drop it). */

INLINE VT V(load)(const float *p) {
  VT v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

INLINE void V(store)(float *p, VT v) { __builtin_memcpy(p, &v, sizeof v); }

INLINE VT V(splat)(float s) { return s - (VT){}; }   /* a broadcast: s - 0 is s, -0 included */

/* where m (all-ones lanes) then a else b */
INLINE VT V(select)(VI m, VT a, VT b) { return (VT)(((VI)a & m) | ((VI)b & ~m)); }

INLINE float V(hsum)(VT v) {
  float s = 0.0f;
  for (int j = 0; j < VN; j++) s += v[j];
  return s;
}

/* the largest lane; NaN lanes are passed over (softmax's exp pass brings a NaN back) */
INLINE float V(hmax)(VT v) {
  float m = v[0];
  for (int j = 1; j < VN; j++) m = v[j] > m ? v[j] : m;
  return m;
}

/* e^x for x <= 0 (softmax after subtracting the row max, GELU's exp(-x^2/2)): Cephes' expf polynomial
 * on x - n ln2 with ln2 split in two, times 2^n built in the exponent bits; about 1 ulp. Below -87.34
 * (where 2^n leaves the normal range) it returns exactly 0, as an additive -1e9 mask needs; NaN gives NaN. */
INLINE VT V(exp)(VT x) {
  const VT lo = V(splat)(-87.336544f);
  VI under = (VI)(x < lo);
  VT xc = V(select)(under, lo, x);
  VT n = __builtin_elementwise_roundeven(xc * 1.44269504088896341f);
  VT r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  VT p = V(splat)(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + (r + 1.0f);
  VT pow2n = (VT)((__builtin_convertvector(n, VI) + 127) << 23);
  return (VT)((VI)(p * pow2n) & ~under);
}

/* GELU(x) = x/2 (1 + erf(x/sqrt2)) with erf by Abramowitz & Stegun 7.1.26, as gpuport's reference.
 * With q = poly(t) exp(-x^2/2) (= erfc(|x|/sqrt2)) and h = x q / 2: GELU = x - h for x >= 0, h below.
 * Written this way the large-|x| result is x minus a small term (no 1 + erf rounding), which keeps it
 * within an ulp or two of the float64 reference. */
INLINE VT V(gelu)(VT x) {
  VT z = x * 0.70710678118654752f;
  VT a = (VT)((VI)z & 0x7fffffff);
  VT t = 1.0f / (a * 0.3275911f + 1.0f);
  VT p = V(splat)(1.061405429f);
  p = p * t + -1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t + -0.284496736f;
  p = p * t + 0.254829592f;
  VT q = p * t * V(exp)(-(a * a));
  VT h = x * 0.5f * q;
  return V(select)((VI)(x >= 0.0f), x - h, h);
}

/* QuickGELU(x) = x sigmoid(1.702 x) (CLIP's activation), with e = exp(-|1.702 x|) <= 1 so exp never overflows:
 * sigmoid is 1 / (1 + e) for x >= 0 and e / (1 + e) below. */
INLINE VT V(quick_gelu)(VT x) {
  VT z = x * 1.702f;
  VT e = V(exp)(-(VT)((VI)z & 0x7fffffff));
  VT r = 1.0f / (e + 1.0f);
  return x * V(select)((VI)(x >= 0.0f), r, e * r);
}
