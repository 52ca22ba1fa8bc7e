enable f16;
// The full tier's matmul (matmul.wgsl with f16 operands): A and B tiles are rounded to f16 in workgroup
// memory (half the bytes, so twice the tile data per barrier); products are formed and accumulated in f32
// (an f16 x f16 product is exact in f32), so the only error beyond matmul.wgsl's is the operands' rounding:
// |err| <= 2 * 2^-11 * (|a| @ |b|) + the f32 bound. Storage stays f32: same bindings as matmul.wgsl.
// C[b] = A[b] @ B[b] (+ bias), A: (M, K), B: (K, N) or (N, K) when TRANSPOSE_B.
// A 64x64 output tile per workgroup, staged through workgroup memory in K-slices of 16; each of the
// 16x16 invocations keeps a 4x4 block of C in registers (register blocking is what makes software
// adapters fast: a plain one-output-per-thread tile reached ~2% of lavapipe's peak).
override TRANSPOSE_B: bool = false;
override HAS_BIAS: bool = false;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

struct Params { M: u32, N: u32, K: u32, a_batch_stride: u32, b_batch_stride: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> As: array<f16, 1024>;  // [k][m]
var<workgroup> Bs: array<f16, 1024>;  // [k][n]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * TM;
  let col0 = wid.x * TN;
  let a_off = wid.z * p.a_batch_stride;
  let b_off = wid.z * p.b_batch_stride;
  let c_off = wid.z * p.M * p.N;

  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  let ntiles = (p.K + TK - 1u) / TK;
  for (var t = 0u; t < ntiles; t++) {
    let k0 = t * TK;
    for (var r = 0u; r < 4u; r++) {
      let e = li + r * 256u;
      let am = e / TK;
      let ak = e % TK;
      let gm = row0 + am;
      let gk = k0 + ak;
      var av = 0.0;
      if (gm < p.M && gk < p.K) { av = A[a_off + gm * p.K + gk]; }
      As[ak * TM + am] = f16(av);

      let bk = e / TN;
      let bn = e % TN;
      let gk2 = k0 + bk;
      let gn = col0 + bn;
      var bv = 0.0;
      if (gk2 < p.K && gn < p.N) {
        if (TRANSPOSE_B) { bv = B[b_off + gn * p.K + gk2]; } else { bv = B[b_off + gk2 * p.N + gn]; }
      }
      Bs[bk * TN + bn] = f16(bv);
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a0 = f32(As[k * TM + lid.y]);
      let a1 = f32(As[k * TM + lid.y + 16u]);
      let a2 = f32(As[k * TM + lid.y + 32u]);
      let a3 = f32(As[k * TM + lid.y + 48u]);
      let b0 = f32(Bs[k * TN + lid.x]);
      let b1 = f32(Bs[k * TN + lid.x + 16u]);
      let b2 = f32(Bs[k * TN + lid.x + 32u]);
      let b3 = f32(Bs[k * TN + lid.x + 48u]);
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
    let gm = row0 + lid.y + i * 16u;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let gn = col0 + lid.x + j * 16u;
      if (gn >= p.N) { continue; }
      var v = acc[i * 4u + j];
      if (HAS_BIAS) { v = v + bias[gn]; }
      C[c_off + gm * p.N + gn] = v;
    }
  }
}
