/* The subset of <wasm_simd128.h> that gpuport's kernels use, on clang's generic vector extensions, so the
 * same kernel sources build as a native shared library (x86-64, aarch64: .cache/native/libgpuport_simd.so,
 * loaded by gpuport.native_kernels). Each function keeps WebAssembly's semantics where the native
 * instruction differs and a kernel's answer depends on it:
 *   - f32x4 min/max propagate NaN (x86's maxps returns its second operand instead, which would let exp4
 *     turn a NaN into a finite 0 and hide it from hostops' non-finite check);
 *   - trunc_sat saturates and maps NaN to 0 (cvttps2dq gives INT_MIN for both);
 *   - loads and stores are unaligned (NumPy buffers are only 4-byte aligned in general).
 * Ordering of -0 and +0 in max is the one liberty taken (no kernel depends on it).
 * Nothing here is wasm-specific in meaning: with -ffp-contract=fast the separate mul and add the kernels
 * write become FMAs where the target has them.
 */
#ifndef GPUPORT_SIMD128_NATIVE_H
#define GPUPORT_SIMD128_NATIVE_H

#include <stdint.h>

typedef int32_t v128_t __attribute__((vector_size(16), aligned(16)));
typedef float gp_f32x4 __attribute__((vector_size(16)));
typedef int32_t gp_i32x4 __attribute__((vector_size(16)));

#define GP_NATIVE_INLINE static inline __attribute__((always_inline))

GP_NATIVE_INLINE gp_f32x4 gp_f(v128_t v) { return (gp_f32x4)v; }
GP_NATIVE_INLINE v128_t gp_v(gp_f32x4 v) { return (v128_t)v; }

GP_NATIVE_INLINE v128_t wasm_v128_load(const void *p) {
  v128_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

GP_NATIVE_INLINE void wasm_v128_store(void *p, v128_t v) { __builtin_memcpy(p, &v, sizeof v); }

GP_NATIVE_INLINE v128_t wasm_v128_load32_splat(const void *p) {
  int32_t x;
  __builtin_memcpy(&x, p, sizeof x);
  return (v128_t){x, x, x, x};
}

#define wasm_v128_store32_lane(p, v, lane)         \
  do {                                             \
    int32_t gp_lane_ = (v)[lane];                  \
    __builtin_memcpy((p), &gp_lane_, sizeof(int32_t)); \
  } while (0)

GP_NATIVE_INLINE v128_t wasm_f32x4_splat(float x) { return gp_v((gp_f32x4){x, x, x, x}); }
GP_NATIVE_INLINE v128_t wasm_i32x4_splat(int32_t x) { return (v128_t){x, x, x, x}; }
#define wasm_f32x4_extract_lane(v, lane) (gp_f(v)[lane])
#define wasm_i32x4_shuffle(a, b, c0, c1, c2, c3) \
  ((v128_t)__builtin_shufflevector((gp_i32x4)(a), (gp_i32x4)(b), c0, c1, c2, c3))

GP_NATIVE_INLINE v128_t wasm_f32x4_add(v128_t a, v128_t b) { return gp_v(gp_f(a) + gp_f(b)); }
GP_NATIVE_INLINE v128_t wasm_f32x4_sub(v128_t a, v128_t b) { return gp_v(gp_f(a) - gp_f(b)); }
GP_NATIVE_INLINE v128_t wasm_f32x4_mul(v128_t a, v128_t b) { return gp_v(gp_f(a) * gp_f(b)); }
GP_NATIVE_INLINE v128_t wasm_f32x4_div(v128_t a, v128_t b) { return gp_v(gp_f(a) / gp_f(b)); }
GP_NATIVE_INLINE v128_t wasm_f32x4_neg(v128_t a) { return a ^ wasm_i32x4_splat(INT32_MIN); }
GP_NATIVE_INLINE v128_t wasm_f32x4_abs(v128_t a) { return a & wasm_i32x4_splat(INT32_MAX); }
GP_NATIVE_INLINE v128_t wasm_f32x4_nearest(v128_t a) { return gp_v(__builtin_elementwise_roundeven(gp_f(a))); }

GP_NATIVE_INLINE v128_t wasm_f32x4_sqrt(v128_t a) {
  gp_f32x4 x = gp_f(a);  /* once per layer-norm row: lane by lane is fine */
  return gp_v((gp_f32x4){__builtin_sqrtf(x[0]), __builtin_sqrtf(x[1]), __builtin_sqrtf(x[2]), __builtin_sqrtf(x[3])});
}

GP_NATIVE_INLINE v128_t wasm_f32x4_lt(v128_t a, v128_t b) { return (v128_t)(gp_f(a) < gp_f(b)); }
GP_NATIVE_INLINE v128_t wasm_f32x4_ge(v128_t a, v128_t b) { return (v128_t)(gp_f(a) >= gp_f(b)); }

GP_NATIVE_INLINE v128_t wasm_v128_and(v128_t a, v128_t b) { return a & b; }
GP_NATIVE_INLINE v128_t wasm_v128_andnot(v128_t a, v128_t b) { return a & ~b; }
GP_NATIVE_INLINE v128_t wasm_v128_bitselect(v128_t a, v128_t b, v128_t mask) { return (a & mask) | (b & ~mask); }

/* NaN in either operand gives NaN (a + b is a quiet NaN then), as WebAssembly's f32x4.max/min. */
GP_NATIVE_INLINE v128_t gp_nan_or(v128_t a, v128_t b, v128_t picked) {
  v128_t unordered = (v128_t)(gp_f(a) != gp_f(a)) | (v128_t)(gp_f(b) != gp_f(b));
  return wasm_v128_bitselect(wasm_f32x4_add(a, b), picked, unordered);
}
GP_NATIVE_INLINE v128_t wasm_f32x4_max(v128_t a, v128_t b) {
  return gp_nan_or(a, b, wasm_v128_bitselect(a, b, (v128_t)(gp_f(a) > gp_f(b))));
}
GP_NATIVE_INLINE v128_t wasm_f32x4_min(v128_t a, v128_t b) {
  return gp_nan_or(a, b, wasm_v128_bitselect(a, b, (v128_t)(gp_f(a) < gp_f(b))));
}

GP_NATIVE_INLINE v128_t wasm_i32x4_add(v128_t a, v128_t b) { return a + b; }
GP_NATIVE_INLINE v128_t wasm_i32x4_shl(v128_t a, uint32_t n) { return a << (int32_t)(n & 31); }

/* Saturating float -> int32 (NaN -> 0), as WebAssembly's: the native conversion is undefined out of
 * range, so NaN and the ends are replaced before it, never fixed after. */
GP_NATIVE_INLINE v128_t wasm_i32x4_trunc_sat_f32x4(v128_t a) {
  const gp_f32x4 x = gp_f(a);
  const gp_f32x4 lo = {-2147483648.0f, -2147483648.0f, -2147483648.0f, -2147483648.0f};
  const gp_f32x4 hi = {2147483520.0f, 2147483520.0f, 2147483520.0f, 2147483520.0f}; /* largest float < 2^31 */
  gp_f32x4 c = gp_f(wasm_v128_andnot(a, (v128_t)(x != x)));
  c = gp_f(wasm_v128_bitselect(gp_v(lo), gp_v(c), (v128_t)(c < lo)));
  c = gp_f(wasm_v128_bitselect(gp_v(hi), gp_v(c), (v128_t)(c > hi)));
  v128_t r = (v128_t)__builtin_convertvector(c, gp_i32x4);
  return wasm_v128_bitselect(wasm_i32x4_splat(INT32_MAX), r, (v128_t)(x > hi));
}

#endif
