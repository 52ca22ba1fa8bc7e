// The KV cache's append: dst[dst_off + i] = src[src_off + i] for i < n, written in place into a cache buffer
// (one dispatch per cache block the new rows fall in).
override WG: u32 = 256u;

struct Params { n: u32, src_off: u32, dst_off: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  dst[p.dst_off + i] = src[p.src_off + i];
}
