// Rotary position embedding on the GGUF layout: each head of x (T, heads*D) rotates its adjacent pairs (2i, 2i+1)
// by row t's angle for pair i: (a, b) -> (a*cos - b*sin, b*cos + a*sin). cos, sin (T, D/2) come from the host
// (angles pos * theta^(-2i/D) in f32, as Hugging Face computes them: a GPU's cos of a large angle is not that
// accurate). One invocation per pair.
override WG: u32 = 256u;

struct Params { t: u32, heads: u32, half: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> cs: array<f32>;
@group(0) @binding(2) var<storage, read> sn: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  let per_row = p.heads * p.half;
  if (i >= p.t * per_row) { return; }
  let a = i / per_row * p.half + i % p.half;   // row t, pair index within the head
  let c = cs[a];
  let s = sn[a];
  let v = x[i];
  out[i] = vec2<f32>(v.x * c - v.y * s, v.y * c + v.x * s);
}
