// x / max(||x||_2, 1e-12) over the last axis (torch.nn.functional.normalize's eps), scale-safe: the
// norm is sc * sqrt(sum((x / sc)^2)) with sc = 2^e, e the exponent of max|x|, so no finite row overflows or
// underflows its squares (e capped at 126). x / sc is one product by a normal power of two (exact), never a division
// by the peak: WGSL's x / y is accurate only for |y| in [2^-126, 2^126], and NVIDIA's Vulkan driver, taking 1 / y
// first, flushes beyond that.
// A NaN anywhere in the row makes the row NaN (max is NaN-propagating here; WGSL's max need not be).
const WG: u32 = 64u;
const F32_MAX: f32 = 3.4028234e38;

struct Params { rows: u32, n: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
// 2^k, from its bits (k in [-126, 127])
fn pow2(k: i32) -> f32 { return bitcast<f32>(u32(k + 127) << 23u); }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;

  var m = 0.0;
  for (var j = li; j < p.n; j += WG) { m = max_nan(m, abs(x[base + j])); }
  red[li] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = max_nan(red[li], red[li + k]); }
    workgroupBarrier();
  }
  let peak = workgroupUniformLoad(&red[0]);   // uniform: it decides an early return below
  workgroupBarrier();   // everyone has it before red is reused
  if (special(peak)) {   // NaN: the row is NaN; inf: x / inf, i.e. 0 (NaN for the infinities)
    let nan = bitcast<f32>(0x7fc00000u | p._p0);
    for (var j = li; j < p.n; j += WG) {
      let v = x[base + j];
      out[base + j] = select(v * 0.0, nan, is_nan(peak) || special(v));
    }
    return;
  }
  let scaled = peak > 0.0;   // an all-zero row: the norm is 0, clamped to eps
  // peak = m 2^e, m in [0.5, 1) (a subnormal peak reads e = -126); x / sc = x * rs, rs = 2^-min(e, 126), one normal
  // power of two (|x * rs| < 4). Never two factors whose product is subnormal (e > 126): NVIDIA's Vulkan driver
  // multiplied them first and flushed the product to 0.
  let e = min(select(0, i32((bitcast<u32>(peak) >> 23u) & 0xffu) - 126, scaled), 126);
  let rs = pow2(-e);   // 1 / sc

  var s = 0.0;
  if (scaled) {
    for (var j = li; j < p.n; j += WG) { let v = x[base + j] * rs; s += v * v; }
  }
  red[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  // x / norm as (x / sc) / root: sc * root itself may exceed float32 (two values of 3e38); root is in [0.5, 4 sqrt(n)].
  let root = sqrt(red[0]);
  var by = root;
  var pre = scaled;
  if (!scaled) {
    by = 1e-12;                       // all zero: 0 / eps
  } else if (root * pow2(e) < 1e-12) {   // the norm (inf past float32, where e > 0: not below eps either)
    by = 1e-12;                       // the eps clamp
    pre = false;
  }
  for (var j = li; j < p.n; j += WG) {
    let v = x[base + j];
    out[base + j] = select(v, v * rs, pre) / by;
  }
}
