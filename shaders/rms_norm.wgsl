// RMSNorm over the last axis: out = w * (x * (1 / sqrt(mean(x^2) + eps))), in f32 as Hugging Face's LlamaRMSNorm
// (the llama blocks' norm). One workgroup per row (spilling into y past 65535 rows); the sum of squares is a tree
// in workgroup memory. Rows of |x| beyond ~1e19 overflow their squares (activations are far below).
const WG: u32 = 64u;

struct Params { rows: u32, n: u32, eps: f32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var s = 0.0;
  for (var j = li; j < p.n; j += WG) { let v = x[base + j]; s += v * v; }
  red[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(red[0] / f32(p.n) + p.eps);
  for (var j = li; j < p.n; j += WG) { out[base + j] = w[j] * (x[base + j] * inv); }
}
