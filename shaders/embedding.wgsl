// out[r, :] = table[ids[r], :]. An id outside the table writes zeros: the host checks ids it knows,
// and the guard keeps a bad id on the device from reading another buffer's memory.
override WG: u32 = 256u;

struct Params { n: u32, hidden: u32, vocab: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let r = i / p.hidden;
  let c = i % p.hidden;
  let id = ids[r];
  var v = 0.0;
  if (id < p.vocab) { v = table[id * p.hidden + c]; }
  out[i] = v;
}
