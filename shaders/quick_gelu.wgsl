// QuickGELU, CLIP's activation: x sigmoid(1.702 x). With e = exp(-|1.702 x|) <= 1 (never overflows), sigmoid is
// 1 / (1 + e) for x >= 0 and e / (1 + e) below, as the C host kernel computes it.
override WG: u32 = 256u;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let v = x[i];
  let e = exp(-abs(1.702 * v));
  let r = 1.0 / (1.0 + e);
  // at -inf the product is -inf * 0: the limit is 0
  out[i] = select(v * select(e * r, r, v >= 0.0), 0.0, v < -3.4028234e38);
}
