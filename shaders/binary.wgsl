// out[i] = a[i] OP b[i % nb]: add (OP=0) or mul (OP=1), b broadcast over the leading axes of a.
override OP: u32 = 0u;
override WG: u32 = 256u;

struct Params { n: u32, nb: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let x = a[i];
  let y = b[i % p.nb];
  if (OP == 0u) { out[i] = x + y; } else { out[i] = x * y; }
}
