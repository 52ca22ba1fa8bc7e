// LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta, biased variance as in
// PyTorch. Scale-safe: the row is scaled by sc = 2^e, e the exponent of its peak |x| capped at 126 (y = x / sc,
// |y| < 4; the result is (y - mean_y) / sqrt(var_y + eps / sc^2)), so no finite row overflows its squares; then
// two passes (mean, then centred squares) avoid E[x^2]-E[x]^2 cancellation. A NaN or inf in the row gives a NaN row.
// The scaling is one product by a normal power of two (exact), never a division by the peak: WGSL's x / y is
// accurate only for |y| in [2^-126, 2^126], and NVIDIA's Vulkan driver, taking 1 / y first, flushed a row holding
// 3e38 to 0 / 0. Nor two factors whose product is subnormal: that driver multiplied them first and flushed it.
// HAS_RES: the row is x + res, the residual added as it is read (a post-norm transformer's residual and
// LayerNorm in one pass: no sum written and read back).
override HAS_RES: bool = false;
const WG: u32 = 64u;

struct Params { rows: u32, n: u32, eps: f32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read> res: array<f32>;   // HAS_RES: the residual added to x first
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

const F32_MAX: f32 = 3.4028234e38;

fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
// the row's value at i: x, or x + residual (rounded to f32 once, as the reference adds them)
fn z(i: u32) -> f32 { if (HAS_RES) { return x[i] + res[i]; } return x[i]; }
// 2^k, from its bits (k in [-126, 127])
fn pow2(k: i32) -> f32 { return bitcast<f32>(u32(k + 127) << 23u); }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;

  var m = 0.0;
  for (var j = li; j < p.n; j += WG) { m = max_nan(m, abs(z(base + j))); }
  red[li] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = max_nan(red[li], red[li + k]); }
    workgroupBarrier();
  }
  let peak = workgroupUniformLoad(&red[0]);   // uniform: it decides an early return below
  workgroupBarrier();   // everyone has it before red is reused
  if (special(peak)) {   // an inf or NaN in the row: the whole row is NaN, as the reference's
    for (var j = li; j < p.n; j += WG) { out[base + j] = bitcast<f32>(0x7fc00000u | p._p0); }
    return;
  }
  // peak = m 2^e with m in [0.5, 1) (a subnormal peak reads e = -126); an all-zero row stays unscaled (e = 0).
  // y = x * rs, rs = 1 / sc = 2^-min(e, 126): a normal float for every e.
  let e = min(select(0, i32((bitcast<u32>(peak) >> 23u) & 0xffu) - 126, peak > 0.0), 126);
  let rs = pow2(-e);
  // Deviations from the row's first value y0, not the values themselves: a constant row's are exactly 0 whatever
  // its values' mantissas (so with eps = 0 it is 0 / 0, NaN, as the reference's), and there is less to cancel.
  let y0 = select(0.0, z(base) * rs, p.n > 0u);

  var s = 0.0;
  for (var j = li; j < p.n; j += WG) { s += z(base + j) * rs - y0; }
  red[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  let mean = red[0] / f32(p.n);
  workgroupBarrier();

  var q = 0.0;
  for (var j = li; j < p.n; j += WG) { let d = z(base + j) * rs - y0 - mean; q += d * d; }
  red[li] = q;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  // 1 / sqrt(var_y + eps / sc^2): where eps / sc^2 overflows (a tiny row), var_y <= 16 is negligible beside
  // it and the factor is sc / sqrt(eps). A zero denominator with eps > 0 means every centred value is 0
  // too (0, not 0 * inf). eps = 0 is 0 even where rs * rs overflows (0 * inf, were it multiplied first).
  let var_y = red[0] / f32(p.n);
  let t = select(p.eps * rs * rs, 0.0, p.eps == 0.0);
  let den = var_y + t;
  var inv = inverseSqrt(den);
  if (t > F32_MAX) { inv = inverseSqrt(p.eps) * pow2(e); }   // e < 0 here, >= -126: 2^e is normal
  if (den == 0.0 && p.eps > 0.0) { inv = 0.0; }
  for (var j = li; j < p.n; j += WG) {
    out[base + j] = (z(base + j) * rs - y0 - mean) * inv * gamma[j] + beta[j];
  }
}
