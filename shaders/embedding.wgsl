// out[r, :] = table[ids[r], :]. An id outside the table writes zeros and reports itself in the error
// buffer (err[0] = 1: the flag, err[1] = the id, err[2] = the table's rows), which the next read checks:
// the host then raises IndexError. The guard also keeps a bad id from reading another buffer's memory.
override WG: u32 = 256u;

struct Params { n: u32, hidden: u32, vocab: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> err: array<atomic<u32>, 4>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let r = i / p.hidden;
  let c = i % p.hidden;
  let id = ids[r];
  var v = 0.0;
  if (id < p.vocab) {
    v = table[id * p.hidden + c];
  } else if (c == 0u) {
    atomicStore(&err[1], id);
    atomicStore(&err[2], p.vocab);
    atomicStore(&err[0], 1u);
  }
  out[i] = v;
}
