// y[y_off + n] = sum_k W[n, k] * x[x_off + k] for a Q8_0 weight W (N, K) read as stored (the tied output head).
// A Q8_0 block is 34 bytes: f16 d, then 32 int8 q; value = d*q. 34 is not a multiple of 4, so a block starts on
// any 2-byte boundary: the f16 is the low or the high half of a word, and the quants of a block that starts
// on a word boundary sit 2 bytes into their words (each quant word is then spliced from two words).
// Row n starts at byte 4*w_off + n*34*K/32. Work split as q4_1_matvec: a lane group of LANES invocations owns
// 4 rows, lanes stride over half-blocks (16 quants, four vec4 of x shared by the 4 rows), tree reduction of
// vec4 partial sums in workgroup memory; f32 accumulation.
// Bindings: W (u32 words), x (vec4<f32>; x_off a multiple of 4), y (f32), uniforms. K a multiple of 32.
// Dispatch ceil(N / (4*64/LANES)) workgroups (in x, spilling into y past 65535).
override LANES: u32 = 8u;   // a power of two <= 64
const WG: u32 = 64u;
const R: u32 = 4u;

struct Params { n: u32, k: u32, w_off: u32, x_off: u32, y_off: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<vec4<f32>, WG>;

// Four int8 (little-endian in a u32) as f32.
fn i8x4(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let lane = li % LANES;
  let row0 = ((wid.y * nwg.x + wid.x) * (WG / LANES) + li / LANES) * R;
  let rows = min(R, p.n - min(row0, p.n));
  let blocks = p.k / 32u;
  let units = select(0u, 2u * blocks, rows > 0u);
  let row_bytes = blocks * 34u;
  let x4 = p.x_off / 4u;
  var acc = vec4<f32>(0.0);
  for (var u = lane; u < units; u += LANES) {
    let b = u >> 1u;
    let h = u & 1u;   // half h: quants 16h..16h+15
    let xb = x4 + b * 8u + 4u * h;
    let x0 = x[xb];
    let x1 = x[xb + 1u];
    let x2 = x[xb + 2u];
    let x3 = x[xb + 3u];
    for (var r = 0u; r < rows; r++) {
      let s = p.w_off * 4u + (row0 + r) * row_bytes + b * 34u;   // the block's first byte (even)
      let dd = unpack2x16float(W[s >> 2u]);
      let d = select(dd.x, dd.y, (s & 2u) != 0u);
      let qi = (s + 2u + 16u * h) >> 2u;
      var q0 = W[qi];
      var q1 = W[qi + 1u];
      var q2 = W[qi + 2u];
      var q3 = W[qi + 3u];
      if ((s & 2u) == 0u) {
        // block on a word boundary: its quants start 2 bytes into the word
        let q4 = W[qi + 4u];
        q0 = (q0 >> 16u) | (q1 << 16u);
        q1 = (q1 >> 16u) | (q2 << 16u);
        q2 = (q2 >> 16u) | (q3 << 16u);
        q3 = (q3 >> 16u) | (q4 << 16u);
      }
      let sq = dot(i8x4(q0), x0) + dot(i8x4(q1), x1) + dot(i8x4(q2), x2) + dot(i8x4(q3), x3);
      acc[r] = acc[r] + d * sq;
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
