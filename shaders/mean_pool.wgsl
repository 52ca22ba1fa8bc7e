// out[b, h] = sum_s x[b, s, h] * mask[b, s] / max(sum_s mask[b, s], 1e-9)  (sentence-transformers' pooling).
override WG: u32 = 256u;

struct Params { batch: u32, seq: u32, hidden: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.batch * p.hidden) { return; }
  let b = i / p.hidden;
  let h = i % p.hidden;
  var acc = 0.0;
  var count = 0.0;
  for (var s = 0u; s < p.seq; s++) {
    let m = mask[b * p.seq + s];
    acc += x[(b * p.seq + s) * p.hidden + h] * m;
    count += m;
  }
  out[i] = acc / max(count, 1e-9);
}
