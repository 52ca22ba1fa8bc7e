enable f16;
// The full tier's Q4_1 matvec (q4_1_matvec.wgsl with f16 arithmetic inside a half-block): x is rounded to f16,
// each weight is dequantized in f16 (d*q + m; d and m are stored as f16, so only the result rounds) and the
// 16-term dot product of a half-block is formed in f16; half-block sums are accumulated in f32. Error beyond
// the f32 kernel's: about 20 * 2^-11 * (|d|q + |m|) @ |x|. A half-block's f16 partial sum overflows past 65504:
// fine for normed activations, not for raw residuals. Same bindings, uniforms and dispatch as q4_1_matvec.wgsl.
override LANES: u32 = 8u;   // a power of two <= 64
const WG: u32 = 64u;
const R: u32 = 4u;

struct Params { n: u32, k: u32, w_off: u32, x_off: u32, y_off: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let lane = li % LANES;
  let row0 = ((wid.y * nwg.x + wid.x) * (WG / LANES) + li / LANES) * R;
  let rows = min(R, p.n - min(row0, p.n));
  let blocks = p.k / 32u;
  let units = select(0u, 2u * blocks, rows > 0u);
  let row_words = blocks * 5u;
  let x4 = p.x_off / 4u;
  let sh_lo = vec4<u32>(0u, 8u, 16u, 24u);
  let sh_hi = vec4<u32>(4u, 12u, 20u, 28u);
  let mask = vec4<u32>(15u);
  var acc = vec4<f32>(0.0);
  for (var u = lane; u < units; u += LANES) {
    let b = u >> 1u;
    let h = u & 1u;
    let xb = x4 + b * 8u + 2u * h;
    let xa0 = vec4<f16>(x[xb]);
    let xa1 = vec4<f16>(x[xb + 1u]);
    let xc0 = vec4<f16>(x[xb + 4u]);
    let xc1 = vec4<f16>(x[xb + 5u]);
    for (var r = 0u; r < rows; r++) {
      let wb = p.w_off + (row0 + r) * row_words + b * 5u;
      let dm = vec2<f16>(unpack2x16float(W[wb]));
      let q0 = vec4<u32>(W[wb + 1u + 2u * h]);
      let q1 = vec4<u32>(W[wb + 2u + 2u * h]);
      let s = dot(vec4<f16>((q0 >> sh_lo) & mask) * dm.x + dm.y, xa0)
            + dot(vec4<f16>((q1 >> sh_lo) & mask) * dm.x + dm.y, xa1)
            + dot(vec4<f16>((q0 >> sh_hi) & mask) * dm.x + dm.y, xc0)
            + dot(vec4<f16>((q1 >> sh_hi) & mask) * dm.x + dm.y, xc1);
      acc[r] = acc[r] + f32(s);
    }
  }
  red[li] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  if (lane == 0u) {
    let v = red[li];
    for (var r = 0u; r < rows; r++) { y[p.y_off + row0 + r] = v[r]; }
  }
}
