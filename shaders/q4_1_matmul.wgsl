// Y[m, n] = sum_k X[m, k] * W[n, k] for a prompt X (M, K) and a Q4_1 weight W (N, K) read as stored (prefill).
// Block layout as in q4_1_matvec.wgsl. A 32x32 tile of Y per 8x8 workgroup; K advances one block (32) at a
// time: the workgroup stages 32 rows of X and the 32 blocks of W (dequantized, d*q + m in f32) in workgroup
// memory, and each invocation keeps a 4x4 block of Y in registers; f32 accumulation.
// X row m starts at x_off + m*K, Y row m at y_off + m*N; W row n at word w_off + n*5*K/32.
// Bindings: W (u32 words), X (vec4<f32>; x_off a multiple of 4), Y (f32), uniforms. K a multiple of 32.
// Dispatch (ceil(N/32), ceil(M/32), 1) workgroups.
const T: u32 = 32u;

struct Params { m: u32, n: u32, k: u32, w_off: u32, x_off: u32, y_off: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> Xs: array<f32, 1024>;  // [k][m]
var<workgroup> Ws: array<f32, 1024>;  // [k][n]

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * T;
  let col0 = wid.x * T;
  let blocks = p.k / 32u;
  let k4 = p.k / 4u;
  let x4 = p.x_off / 4u;
  // staging roles: invocation li loads X row li/2 (16 of the block's 32 k) and W row li/2 (half-block li%2)
  let sr = li >> 1u;
  let sh = li & 1u;
  let gm = row0 + sr;
  let gn = col0 + sr;
  let sh_lo = vec4<u32>(0u, 8u, 16u, 24u);
  let sh_hi = vec4<u32>(4u, 12u, 20u, 28u);
  let mask = vec4<u32>(15u);

  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var b = 0u; b < blocks; b++) {
    for (var j = 0u; j < 4u; j++) {
      var xv = vec4<f32>(0.0);
      if (gm < p.m) { xv = X[x4 + gm * k4 + b * 8u + sh * 4u + j]; }
      let kk = sh * 16u + j * 4u;
      Xs[kk * T + sr] = xv.x;
      Xs[(kk + 1u) * T + sr] = xv.y;
      Xs[(kk + 2u) * T + sr] = xv.z;
      Xs[(kk + 3u) * T + sr] = xv.w;
    }
    var dm = vec2<f32>(0.0);
    var q0 = 0u;
    var q1 = 0u;
    if (gn < p.n) {
      let wb = p.w_off + (gn * blocks + b) * 5u;
      dm = unpack2x16float(W[wb]);
      q0 = W[wb + 1u + 2u * sh];
      q1 = W[wb + 2u + 2u * sh];
    }
    // half sh: elements 8sh..8sh+7 (low nibbles) and 16+8sh..16+8sh+7 (high nibbles); out of range: zeros
    let lo0 = vec4<f32>((vec4<u32>(q0) >> sh_lo) & mask) * dm.x + dm.y;
    let lo1 = vec4<f32>((vec4<u32>(q1) >> sh_lo) & mask) * dm.x + dm.y;
    let hi0 = vec4<f32>((vec4<u32>(q0) >> sh_hi) & mask) * dm.x + dm.y;
    let hi1 = vec4<f32>((vec4<u32>(q1) >> sh_hi) & mask) * dm.x + dm.y;
    for (var e = 0u; e < 4u; e++) {
      Ws[(8u * sh + e) * T + sr] = lo0[e];
      Ws[(8u * sh + 4u + e) * T + sr] = lo1[e];
      Ws[(16u + 8u * sh + e) * T + sr] = hi0[e];
      Ws[(16u + 8u * sh + 4u + e) * T + sr] = hi1[e];
    }
    workgroupBarrier();
    for (var k = 0u; k < 32u; k++) {
      let a0 = Xs[k * T + lid.y];
      let a1 = Xs[k * T + lid.y + 8u];
      let a2 = Xs[k * T + lid.y + 16u];
      let a3 = Xs[k * T + lid.y + 24u];
      let w0 = Ws[k * T + lid.x];
      let w1 = Ws[k * T + lid.x + 8u];
      let w2 = Ws[k * T + lid.x + 16u];
      let w3 = Ws[k * T + lid.x + 24u];
      acc[0] = fma(a0, w0, acc[0]);   acc[1] = fma(a0, w1, acc[1]);
      acc[2] = fma(a0, w2, acc[2]);   acc[3] = fma(a0, w3, acc[3]);
      acc[4] = fma(a1, w0, acc[4]);   acc[5] = fma(a1, w1, acc[5]);
      acc[6] = fma(a1, w2, acc[6]);   acc[7] = fma(a1, w3, acc[7]);
      acc[8] = fma(a2, w0, acc[8]);   acc[9] = fma(a2, w1, acc[9]);
      acc[10] = fma(a2, w2, acc[10]); acc[11] = fma(a2, w3, acc[11]);
      acc[12] = fma(a3, w0, acc[12]); acc[13] = fma(a3, w1, acc[13]);
      acc[14] = fma(a3, w2, acc[14]); acc[15] = fma(a3, w3, acc[15]);
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y + i * 8u;
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x + j * 8u;
      if (m < p.m && n < p.n) { Y[p.y_off + m * p.n + n] = acc[i * 4u + j]; }
    }
  }
}
