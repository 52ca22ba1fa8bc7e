// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). WGSL has no erf, so erf is Abramowitz & Stegun 7.1.26
// (max abs error 1.5e-7), which keeps GELU within ~1e-7 of the exact function; tanh-GELU is off by ~4e-4.
override WG: u32 = 256u;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// BEGIN prelude/erf.wgsl: copied in by shaders/generate.py, edit that file, not this region
// erf by Abramowitz & Stegun 7.1.26 (WGSL has none): |error| <= 1.5e-7 in exact arithmetic.
fn erf_as(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}
// END prelude/erf.wgsl

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.n) { return; }
  let v = x[i];
  let e = erf_as(v * 0.7071067811865476);
  // at -inf the product is -inf * 0: the limit is 0
  out[i] = select(0.5 * v * (1.0 + e), 0.0, v < -3.4028234e38);
}
