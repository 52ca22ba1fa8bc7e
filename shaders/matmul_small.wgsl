// The constrained tier's matmul: the simplified variant (64 invocations, 4 KiB of workgroup memory) and
// the block kernel of layer decomposition (strides and offsets, so it multiplies one block of a weight
// stored as several buffers, and can accumulate into C for split-K).
//   C[z][m, n_off + n] (+)= sum_{k<K} A[a_off + z*sa + m*lda + k] * B'(z, k, n)  (+ bias[n_off + n])
//   B'(z, k, n) = B[z*sb + k*ldb + n], or B[z*sb + n*ldb + k] when TRANSPOSE_B;  C at c_off + z*sc + m*ldc.
// A 32x32 output tile per 8x8 workgroup, K-slices of 16, each invocation a 4x4 block of C in registers.
override TRANSPOSE_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;

const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;

struct Params {
  M: u32, N: u32, K: u32, lda: u32,
  ldb: u32, ldc: u32, a_off: u32, n_off: u32,
  sa: u32, sb: u32, sc: u32, c_off: u32,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> As: array<f32, 512>;  // [k][m]
var<workgroup> Bs: array<f32, 512>;  // [k][n]

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * TM;
  let col0 = wid.x * TN;
  let a_base = p.a_off + wid.z * p.sa;
  let b_base = wid.z * p.sb;
  let c_base = p.c_off + wid.z * p.sc;

  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  let ntiles = (p.K + TK - 1u) / TK;
  for (var t = 0u; t < ntiles; t++) {
    let k0 = t * TK;
    for (var r = 0u; r < 8u; r++) {
      let e = li + r * 64u;
      let am = e / TK;
      let ak = e % TK;
      let gm = row0 + am;
      let gk = k0 + ak;
      var av = 0.0;
      if (gm < p.M && gk < p.K) { av = A[a_base + gm * p.lda + gk]; }
      As[ak * TM + am] = av;

      let bk = e / TN;
      let bn = e % TN;
      let gk2 = k0 + bk;
      let gn = col0 + bn;
      var bv = 0.0;
      if (gk2 < p.K && gn < p.N) {
        if (TRANSPOSE_B) { bv = B[b_base + gn * p.ldb + gk2]; } else { bv = B[b_base + gk2 * p.ldb + gn]; }
      }
      Bs[bk * TN + bn] = bv;
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a0 = As[k * TM + lid.y];
      let a1 = As[k * TM + lid.y + 8u];
      let a2 = As[k * TM + lid.y + 16u];
      let a3 = As[k * TM + lid.y + 24u];
      let b0 = Bs[k * TN + lid.x];
      let b1 = Bs[k * TN + lid.x + 8u];
      let b2 = Bs[k * TN + lid.x + 16u];
      let b3 = Bs[k * TN + lid.x + 24u];
      acc[0] = fma(a0, b0, acc[0]);   acc[1] = fma(a0, b1, acc[1]);
      acc[2] = fma(a0, b2, acc[2]);   acc[3] = fma(a0, b3, acc[3]);
      acc[4] = fma(a1, b0, acc[4]);   acc[5] = fma(a1, b1, acc[5]);
      acc[6] = fma(a1, b2, acc[6]);   acc[7] = fma(a1, b3, acc[7]);
      acc[8] = fma(a2, b0, acc[8]);   acc[9] = fma(a2, b1, acc[9]);
      acc[10] = fma(a2, b2, acc[10]); acc[11] = fma(a2, b3, acc[11]);
      acc[12] = fma(a3, b0, acc[12]); acc[13] = fma(a3, b1, acc[13]);
      acc[14] = fma(a3, b2, acc[14]); acc[15] = fma(a3, b3, acc[15]);
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let gm = row0 + lid.y + i * 8u;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let gn = col0 + lid.x + j * 8u;
      if (gn >= p.N) { continue; }
      let ci = c_base + gm * p.ldc + p.n_off + gn;
      var v = acc[i * 4u + j];
      if (HAS_BIAS) { v = v + bias[p.n_off + gn]; }
      if (ACCUMULATE) { v = v + C[ci]; }
      C[ci] = v;
    }
  }
}
