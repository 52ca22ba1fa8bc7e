enable f16;
// The full tier's softmax: the row max and the sum stay f32 (accuracy), exp is evaluated in f16 on the
// max-subtracted argument z <= 0 (below -16, where f16's exp is subnormal, the term is 0: masked keys stay 0).
// Rounding z to f16 costs |z| * 2^-11 relative: |error| <= 1e-3 absolute (outputs <= 1) and <= 1e-2 relative.
// Same bindings as softmax.wgsl.
override HAS_MASK: bool = false;
const WG: u32 = 64u;

struct Params { rows: u32, n: u32, mask_row_stride: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

// WGSL's max may return either operand when one is NaN: a NaN score must make the row NaN (as NumPy).
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }

fn value(row: u32, j: u32) -> f32 {
  var v = x[row * p.n + j];
  if (HAS_MASK) { v = v + mask[row * p.mask_row_stride + j]; }
  return v;
}

fn exp_h(z: f32) -> f32 {
  if (z < -16.0) { return 0.0; }
  return f32(exp(f16(z)));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }

  let nan = bitcast<f32>(0x7fc00000u | p._p0);      // built at run time: Tint refuses NaN constants
  var m = bitcast<f32>(0xff800000u | p._p0);        // -inf
  for (var j = li; j < p.n; j += WG) { m = max_nan(m, value(row, j)); }
  red[li] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] = max_nan(red[li], red[li + s]); }
    workgroupBarrier();
  }
  let row_max = workgroupUniformLoad(&red[0]);   // uniform: it decides an early return below
  workgroupBarrier();   // everyone has it before red is reused
  // a NaN or +inf in the row, or a row of -inf: NaN, as the max-subtracted reference gives
  if (special(row_max)) {
    for (var j = li; j < p.n; j += WG) { out[row * p.n + j] = nan; }
    return;
  }

  var total = 0.0;
  for (var j = li; j < p.n; j += WG) { total += exp_h(value(row, j) - row_max); }
  red[li] = total;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / red[0];
  for (var j = li; j < p.n; j += WG) { out[row * p.n + j] = exp_h(value(row, j) - row_max) * inv; }
}
