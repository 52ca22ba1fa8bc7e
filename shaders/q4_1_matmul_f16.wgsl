enable f16;
// The full tier's Q4_1 prefill matmul (q4_1_matmul.wgsl with f16 arithmetic inside a half-block): x is rounded
// to f16, each weight is dequantized in f16 (d*q + m) and each token's 16-term dot product of a half-block is
// formed in f16; half-block sums are accumulated in f32. Error beyond the f32 kernel's: about
// 20 * 2^-11 * (|d|q + |m|) @ |x|. Same bindings, uniforms and dispatch as q4_1_matmul.wgsl.
override LANES: u32 = 4u;   // a power of two <= 64
const WG: u32 = 64u;
const R: u32 = 4u;          // rows per lane group
const TT: u32 = 4u;         // tokens per workgroup row

struct Params { m: u32, n: u32, k: u32, w_off: u32, x_off: u32, y_off: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<vec4<f32>, 256>;   // [row r][invocation] (R * WG), each vec4 = 4 tokens

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let lane = li % LANES;
  let row0 = (wid.x * (WG / LANES) + li / LANES) * R;
  let tok0 = wid.y * TT;
  let rows = min(R, p.n - min(row0, p.n));    // 0 past N: no loads, but still at the barriers
  let toks = min(TT, p.m - min(tok0, p.m));   // >= 1: the grid has ceil(M/4) rows
  let blocks = p.k / 32u;
  let units = select(0u, 2u * blocks, rows > 0u);
  let row_words = blocks * 5u;
  let k4 = p.k / 4u;
  let x4 = p.x_off / 4u;
  let sh_lo = vec4<u32>(0u, 8u, 16u, 24u);
  let sh_hi = vec4<u32>(4u, 12u, 20u, 28u);
  let mask = vec4<u32>(15u);
  var acc: array<vec4<f32>, 4>;   // acc[r][t]
  for (var r = 0u; r < R; r++) { acc[r] = vec4<f32>(0.0); }
  for (var u = lane; u < units; u += LANES) {
    let b = u >> 1u;
    let h = u & 1u;   // half h: nibble words 1+2h, 2+2h = elements 8h..8h+7 (low) and 16+8h..16+8h+7 (high)
    var xa0: array<vec4<f16>, 4>;
    var xa1: array<vec4<f16>, 4>;
    var xc0: array<vec4<f16>, 4>;
    var xc1: array<vec4<f16>, 4>;
    for (var t = 0u; t < TT; t++) {
      let xb = x4 + (tok0 + min(t, toks - 1u)) * k4 + b * 8u + 2u * h;   // past M: repeat the last token
      xa0[t] = vec4<f16>(X[xb]);
      xa1[t] = vec4<f16>(X[xb + 1u]);
      xc0[t] = vec4<f16>(X[xb + 4u]);
      xc1[t] = vec4<f16>(X[xb + 5u]);
    }
    for (var r = 0u; r < rows; r++) {
      let wb = p.w_off + (row0 + r) * row_words + b * 5u;
      let dm = vec2<f16>(unpack2x16float(W[wb]));
      let q0 = vec4<u32>(W[wb + 1u + 2u * h]);
      let q1 = vec4<u32>(W[wb + 2u + 2u * h]);
      let l0 = vec4<f16>((q0 >> sh_lo) & mask) * dm.x + dm.y;
      let l1 = vec4<f16>((q1 >> sh_lo) & mask) * dm.x + dm.y;
      let h0 = vec4<f16>((q0 >> sh_hi) & mask) * dm.x + dm.y;
      let h1 = vec4<f16>((q1 >> sh_hi) & mask) * dm.x + dm.y;
      var s = vec4<f32>(0.0);
      for (var t = 0u; t < TT; t++) {
        s[t] = f32(dot(l0, xa0[t]) + dot(l1, xa1[t]) + dot(h0, xc0[t]) + dot(h1, xc1[t]));
      }
      acc[r] = acc[r] + s;
    }
  }
  for (var r = 0u; r < R; r++) { red[r * WG + li] = acc[r]; }
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var r = 0u; r < R; r++) { red[r * WG + li] = red[r * WG + li] + red[r * WG + li + s]; }
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    for (var r = 0u; r < rows; r++) {
      let v = red[r * WG + li];
      for (var t = 0u; t < toks; t++) { Y[p.y_off + (tok0 + t) * p.n + row0 + r] = v[t]; }
    }
  }
}
