// A stride-equals-kernel convolution's input as rows (im2col), so the convolution is one matmul against its weight
// seen as (C_out, C P P): pixels (B, C, H, W) -> out (B, 1 + N, C P P), N = (H / P)(W / P) patches in row-major
// order, each row the patch's pixels in the weight's (C, P, P) order. Row 0 of each image is zeros: the class
// token's slot (a vision tower adds its class and position embeddings after the product). One invocation per
// output value.
override WG: u32 = 256u;

struct Params { n: u32, channels: u32, height: u32, width: u32, size: u32, grid_w: u32, patches: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let pp = p.size * p.size;
  let k = p.channels * pp;
  let c = i % k;
  let row = (i / k) % (p.patches + 1u);
  let b = i / (k * (p.patches + 1u));
  if (row == 0u) {
    out[i] = 0.0;
    return;
  }
  let gy = (row - 1u) / p.grid_w;
  let gx = (row - 1u) % p.grid_w;
  let ch = c / pp;
  let py = (c / p.size) % p.size;
  let px = c % p.size;
  out[i] = x[((b * p.channels + ch) * p.height + gy * p.size + py) * p.width + gx * p.size + px];
}
