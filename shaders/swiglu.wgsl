// SwiGLU, the llama feed-forward's gate: out = silu(gate) * up = gate sigmoid(gate) * up, elementwise. With
// e = exp(-|gate|) <= 1 (never overflows), sigmoid is 1 / (1 + e) for gate >= 0 and e / (1 + e) below: every
// division is by a number in [1, 2]. (gate / (1 + exp(-gate)) divides by up to inf; WGSL's x / y is accurate only
// for |y| in [2^-126, 2^126], and NVIDIA's Vulkan driver, taking 1 / y first, flushed it to 0 beyond.)
override WG: u32 = 256u;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let g = gate[i];
  let e = exp(-abs(g));
  let r = 1.0 / (1.0 + e);
  // at -inf the product is -inf * 0: the limit is -0 (silu's), times up
  out[i] = select(g * select(e * r, r, g >= 0.0), -0.0, g < -3.4028234e38) * up[i];
}
