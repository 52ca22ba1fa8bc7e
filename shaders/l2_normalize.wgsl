// x / max(||x||_2, 1e-12) over the last axis (torch.nn.functional.normalize's eps).
const WG: u32 = 64u;

struct Params { rows: u32, n: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  var s = 0.0;
  for (var j = li; j < p.n; j += WG) { let v = x[row * p.n + j]; s += v * v; }
  red[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  let inv = 1.0 / max(sqrt(red[0]), 1e-12);
  for (var j = li; j < p.n; j += WG) { out[row * p.n + j] = x[row * p.n + j] * inv; }
}
