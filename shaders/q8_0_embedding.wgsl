// out[t, :] = dequantized row ids[t] of a Q8_0 table (V, D) read as stored: the token embedding gather.
// A Q8_0 block is 34 bytes (f16 d, 32 int8 q; value = d*q, the same single f32 product as ggml, so the result
// is exact); row v starts at byte 4*w_off + v*34*D/32, and blocks sit on 2-byte boundaries (see
// q8_0_matvec.wgsl). One invocation per 4 outputs; an id outside [0, V) writes zeros.
// Bindings: W (u32 words), ids (u32), out (vec4<f32>, T*D/4 of them from out_off/4), uniforms. D a multiple of
// 32. Dispatch ceil(T*D/4 / 64) workgroups (in x, spilling into y past 65535).
const WG: u32 = 64u;

struct Params { t: u32, d: u32, v: u32, w_off: u32, out_off: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

fn i8x4(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * WG + gid.x;
  let per_row = p.d / 4u;
  if (i >= p.t * per_row) { return; }
  let t = i / per_row;
  let c = i % per_row;          // outputs 4c..4c+3
  let id = ids[t];
  var v = vec4<f32>(0.0);
  if (id < p.v) {
    let s = p.w_off * 4u + id * (p.d / 32u) * 34u + (c / 8u) * 34u;   // the block's first byte (even)
    let dd = unpack2x16float(W[s >> 2u]);
    let d = select(dd.x, dd.y, (s & 2u) != 0u);
    let qb = s + 2u + (c % 8u) * 4u;                                  // first quant byte (even)
    var q = W[qb >> 2u];
    if ((qb & 2u) != 0u) { q = (q >> 16u) | (W[(qb >> 2u) + 1u] << 16u); }
    v = i8x4(q) * d;
  }
  out[p.out_off / 4u + i] = v;
}
