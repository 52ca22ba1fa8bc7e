enable f16;
// The full tier's LayerNorm: the scaled statistics in f32 (as layer_norm.wgsl: they are where cancellation
// and overflow hurt), the affine step in f16: y = f16(x_hat) * f16(gamma) + f16(beta), where
// x_hat = (x - mean) * rstd is formed in f32 and is bounded by sqrt(n), so it never overflows f16.
// |error| <= 4 * 2^-11 * (|x_hat * gamma| + |beta|) + 1e-6.
// Same bindings as layer_norm.wgsl.
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
  let sc = select(1.0, peak, peak > 0.0);   // an all-zero row stays unscaled

  var s = 0.0;
  for (var j = li; j < p.n; j += WG) { s += z(base + j) / sc; }
  red[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  let mean = red[0] / f32(p.n);
  workgroupBarrier();

  var q = 0.0;
  for (var j = li; j < p.n; j += WG) { let d = z(base + j) / sc - mean; q += d * d; }
  red[li] = q;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  // 1 / sqrt(var_y + eps / sc^2): where eps / sc^2 overflows (a tiny row), var_y <= 1 is negligible beside
  // it and the factor is sc / sqrt(eps). A zero denominator with eps > 0 means every centred value is 0
  // too (0, not 0 * inf).
  let var_y = red[0] / f32(p.n);
  let t = p.eps / sc / sc;
  let den = var_y + t;
  var inv = inverseSqrt(den);
  if (t > F32_MAX) { inv = sc * inverseSqrt(p.eps); }
  if (den == 0.0 && p.eps > 0.0) { inv = 0.0; }
  for (var j = li; j < p.n; j += WG) {
    let y = f16((z(base + j) / sc - mean) * inv) * f16(gamma[j]) + f16(beta[j]);
    out[base + j] = f32(y);
  }
}
