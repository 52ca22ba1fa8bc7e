// y[y_off + n] = sum_k W[n, k] * x[x_off + k] for a Q4_1 weight W (N, K) read as stored: the decode hot path.
// A Q4_1 block is 5 u32 words: word 0 = f16 d (low half) | f16 m (high half), words 1..4 = 16 bytes of nibbles
// (byte j: element j in the low nibble, element 16 + j in the high one); value = d*q + m. A row is K/32 blocks
// from word w_off + n*5*K/32. Per block d * sum(q*x) + m * sum(x): the dequantized weight is never formed.
// Work split: a lane group of LANES invocations owns 4 consecutive rows; each lane strides over half-blocks
// (16 elements: four vec4 of x, loaded once and used for the 4 rows), keeps 4 f32 partial sums, and the group
// reduces them as vec4 in workgroup memory (a tree, 64/LANES groups side by side).
// Bindings: W (u32 words), x (vec4<f32>; x_off a multiple of 4), y (f32), uniforms. K a multiple of 32.
// Dispatch ceil(N / (4*64/LANES)) workgroups (in x, spilling into y past 65535).
override LANES: u32 = 8u;   // a power of two <= 64
const WG: u32 = 64u;
const R: u32 = 4u;          // rows per lane group

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
  let rows = min(R, p.n - min(row0, p.n));   // 0 past N: no loads, but still at the barriers
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
    let h = u & 1u;   // half h: nibble words 1+2h, 2+2h = elements 8h..8h+7 (low) and 16+8h..16+8h+7 (high)
    let xb = x4 + b * 8u + 2u * h;
    let xa0 = x[xb];
    let xa1 = x[xb + 1u];
    let xc0 = x[xb + 4u];
    let xc1 = x[xb + 5u];
    let sx = dot(xa0 + xa1 + xc0 + xc1, vec4<f32>(1.0));
    for (var r = 0u; r < rows; r++) {
      let wb = p.w_off + (row0 + r) * row_words + b * 5u;
      let dm = unpack2x16float(W[wb]);
      let q0 = vec4<u32>(W[wb + 1u + 2u * h]);
      let q1 = vec4<u32>(W[wb + 2u + 2u * h]);
      let sq = dot(vec4<f32>((q0 >> sh_lo) & mask), xa0)
             + dot(vec4<f32>((q1 >> sh_lo) & mask), xa1)
             + dot(vec4<f32>((q0 >> sh_hi) & mask), xc0)
             + dot(vec4<f32>((q1 >> sh_hi) & mask), xc1);
      acc[r] = acc[r] + dm.x * sq + dm.y * sx;
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
