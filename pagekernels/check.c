// The check a stored record carries (web/idb.js): XXH32 with seeds 0 and 1 (the reference algorithm:
// github.com/Cyan4973/xxHash doc/xxhash_spec.md, little-endian words) in one pass, in WebAssembly SIMD128. XXH32's
// four accumulators are one i32x4, so a stripe of 16 bytes is one load, a shared multiply and per seed an add, a
// rotate and a multiply: 2-3 GB/s in a fresh Chromium page against SHA-256's 0.5-0.7 (crypto.subtle), which a warm
// visit paid on every stored chunk and on the snapshot.
//
// The module owns its memory: a window the caller copies the record into, piece by piece (gp_check_window), and
// the two states carried across pieces, so any length is checked within the window's megabyte.
#include <stdint.h>
#include <wasm_simd128.h>

#define P1 0x9E3779B1u
#define P2 0x85EBCA77u
#define P3 0xC2B2AE3Du
#define P4 0x27D4EB2Fu
#define P5 0x165667B1u
#define WINDOW (1u << 20)

#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))

static uint8_t window_[WINDOW] __attribute__((aligned(16)));
static v128_t acc[2];        // seed 0's four accumulators, seed 1's
static uint32_t digest[2];

static inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline v128_t round4(v128_t a, v128_t w) {
  a = wasm_i32x4_add(a, w);
  a = wasm_v128_or(wasm_i32x4_shl(a, 13), wasm_u32x4_shr(a, 19));
  return wasm_i32x4_mul(a, wasm_i32x4_splat((int32_t)P1));
}

static uint32_t converge(v128_t a) {
  return rotl(wasm_u32x4_extract_lane(a, 0), 1) + rotl(wasm_u32x4_extract_lane(a, 1), 7) +
         rotl(wasm_u32x4_extract_lane(a, 2), 12) + rotl(wasm_u32x4_extract_lane(a, 3), 18);
}

// the last 0-15 bytes and the avalanche
static uint32_t finish(uint32_t h, const uint8_t *p, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t w;
    __builtin_memcpy(&w, p + i, 4);
    h = rotl(h + w * P3, 17) * P4;
  }
  for (; i < n; i++) h = rotl(h + p[i] * P5, 11) * P1;
  h ^= h >> 15;
  h *= P2;
  h ^= h >> 13;
  h *= P3;
  return h ^ (h >> 16);
}

/** The window's address and size: a record's bytes go there, at most this many at a time. */
EXPORT(gp_check_window) uint8_t *gp_check_window(void) { return window_; }
EXPORT(gp_check_window_bytes) uint32_t gp_check_window_bytes(void) { return WINDOW; }

/** A new record: both states at their seeds. */
EXPORT(gp_check_begin) void gp_check_begin(void) {
  acc[0] = wasm_u32x4_make(P1 + P2, P2, 0, 0u - P1);
  acc[1] = wasm_i32x4_add(acc[0], wasm_i32x4_splat(1));
}

/** The window's first n bytes, n a multiple of 16: the record's next stripes. */
EXPORT(gp_check_stripes) void gp_check_stripes(uint32_t n) {
  const v128_t p2 = wasm_i32x4_splat((int32_t)P2);
  v128_t a = acc[0], b = acc[1];
  for (uint32_t at = 0; at + 16 <= n; at += 16) {
    v128_t w = wasm_i32x4_mul(wasm_v128_load(window_ + at), p2);
    a = round4(a, w);
    b = round4(b, w);
  }
  acc[0] = a;
  acc[1] = b;
}

/** The record's last n_tail (< 16) bytes in the window and its whole length (mod 2^32, as XXH32 adds it; `short_`:
 * under 16 bytes, which took no stripes): the two digests, seed 0's then seed 1's. */
EXPORT(gp_check_end) uint32_t *gp_check_end(uint32_t n_tail, uint32_t length, uint32_t short_) {
  for (uint32_t seed = 0; seed < 2; seed++) {
    uint32_t h = short_ ? seed + P5 : converge(acc[seed]);
    digest[seed] = finish(h + length, window_, n_tail);
  }
  return digest;
}
