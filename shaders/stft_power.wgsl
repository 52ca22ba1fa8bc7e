// STFT power: out[f, k] = |sum_n s[f*hop + n] w[n] e^(-2 pi i k n / n_fft)|^2 for the n_fft // 2 + 1 bins k of
// each frame f (w: the periodic Hann window), the DFT summed directly.
// Twiddles come from `table` (n_fft rows of cos, sin, window, 0 at 2 pi m / n_fft, computed on the host in
// float64 and rounded once): the angle index m = (k n) mod n_fft is kept exactly as an integer (stepped by
// k, wrapped at n_fft), so every twiddle is the correctly rounded one; WGSL's cos/sin are never used (their
// accuracy is loose on some GPUs, and an angle rounded to f32 loses the bin's phase at large k n).
// Register-blocked and barrier-free, as the register-blocked matmuls: a workgroup owns 4 bins (the same in
// every invocation: each twiddle load serves them all) for 64 x 16 frames, each invocation 16 consecutive
// frames (their n-th samples loaded once, each feeding 8 multiply-adds). Each step n: 16 sample and 4
// twiddle loads for 128 multiply-adds, 128 accumulators per invocation. On lavapipe this is ~10x faster than
// a workgroup per frame that stages the frame in workgroup memory and looks twiddles up per bin.
// Dispatch (x, ceil(bins / 4), z) with the frame tiles over x (and z past the per-dimension limit).
const WG: u32 = 64u;
const FL: u32 = 16u;   // frames per invocation: 4 vec4
const RB: u32 = 4u;    // bins per workgroup

struct Params { frames: u32, n_fft: u32, hop: u32, bins: u32 }

@group(0) @binding(0) var<storage, read> signal: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// (k n) mod n_fft stepped to (k (n + 1)) mod n_fft: k < n_fft, so one subtraction wraps it
fn step(m: u32, k: u32) -> u32 {
  let s = m + k;
  return select(s, s - p.n_fft, s >= p.n_fft);
}

// frames f..f+3 of bin k: those past the end are not stored
fn store(f: u32, k: u32, re: vec4<f32>, im: vec4<f32>) {
  if (k >= p.bins) { return; }
  let pw = re * re + im * im;
  for (var i = 0u; i < 4u; i++) {
    if (f + i < p.frames) { out[(f + i) * p.bins + k] = pw[i]; }
  }
}

// the n-th windowed samples of 4 frames starting at sample offsets s (frames past the end read the last one)
fn samples(s: vec4<u32>, n: u32, w: f32) -> vec4<f32> {
  return vec4(signal[s.x + n], signal[s.y + n], signal[s.z + n], signal[s.w + n]) * w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let f = ((wid.z * nwg.x + wid.x) * WG + li) * FL;
  if (f >= p.frames) { return; }
  let last = vec4(p.frames - 1u);
  let i4 = vec4(0u, 1u, 2u, 3u);
  let s0 = min(f + i4, last) * p.hop;
  let s1 = min(f + 4u + i4, last) * p.hop;
  let s2 = min(f + 8u + i4, last) * p.hop;
  let s3 = min(f + 12u + i4, last) * p.hop;
  // the workgroup's bins: one past the last steps by 0 (its twiddle index stays 0, in range; not stored)
  let k0 = wid.y * RB;
  let d = select(vec4(0u), k0 + i4, k0 + i4 < vec4(p.bins));
  var m = vec4(0u);
  // re<bin>_<frames>, im<bin>_<frames>: bin k0 + <bin>, frames f + 4 <frames> .. + 3
  var re0_0 = vec4(0.0); var re0_1 = vec4(0.0); var re0_2 = vec4(0.0); var re0_3 = vec4(0.0);
  var re1_0 = vec4(0.0); var re1_1 = vec4(0.0); var re1_2 = vec4(0.0); var re1_3 = vec4(0.0);
  var re2_0 = vec4(0.0); var re2_1 = vec4(0.0); var re2_2 = vec4(0.0); var re2_3 = vec4(0.0);
  var re3_0 = vec4(0.0); var re3_1 = vec4(0.0); var re3_2 = vec4(0.0); var re3_3 = vec4(0.0);
  var im0_0 = vec4(0.0); var im0_1 = vec4(0.0); var im0_2 = vec4(0.0); var im0_3 = vec4(0.0);
  var im1_0 = vec4(0.0); var im1_1 = vec4(0.0); var im1_2 = vec4(0.0); var im1_3 = vec4(0.0);
  var im2_0 = vec4(0.0); var im2_1 = vec4(0.0); var im2_2 = vec4(0.0); var im2_3 = vec4(0.0);
  var im3_0 = vec4(0.0); var im3_1 = vec4(0.0); var im3_2 = vec4(0.0); var im3_3 = vec4(0.0);
  for (var n = 0u; n < p.n_fft; n++) {
    let w = table[n].z;
    let v0 = samples(s0, n, w);
    let v1 = samples(s1, n, w);
    let v2 = samples(s2, n, w);
    let v3 = samples(s3, n, w);
    // + sin for the imaginary part: its sign does not change the power
    let q0 = table[m.x]; let c0 = vec4(q0.x); let t0 = vec4(q0.y);
    let q1 = table[m.y]; let c1 = vec4(q1.x); let t1 = vec4(q1.y);
    let q2 = table[m.z]; let c2 = vec4(q2.x); let t2 = vec4(q2.y);
    let q3 = table[m.w]; let c3 = vec4(q3.x); let t3 = vec4(q3.y);
    m = vec4(step(m.x, d.x), step(m.y, d.y), step(m.z, d.z), step(m.w, d.w));
    re0_0 = fma(v0, c0, re0_0); re0_1 = fma(v1, c0, re0_1); re0_2 = fma(v2, c0, re0_2); re0_3 = fma(v3, c0, re0_3);
    im0_0 = fma(v0, t0, im0_0); im0_1 = fma(v1, t0, im0_1); im0_2 = fma(v2, t0, im0_2); im0_3 = fma(v3, t0, im0_3);
    re1_0 = fma(v0, c1, re1_0); re1_1 = fma(v1, c1, re1_1); re1_2 = fma(v2, c1, re1_2); re1_3 = fma(v3, c1, re1_3);
    im1_0 = fma(v0, t1, im1_0); im1_1 = fma(v1, t1, im1_1); im1_2 = fma(v2, t1, im1_2); im1_3 = fma(v3, t1, im1_3);
    re2_0 = fma(v0, c2, re2_0); re2_1 = fma(v1, c2, re2_1); re2_2 = fma(v2, c2, re2_2); re2_3 = fma(v3, c2, re2_3);
    im2_0 = fma(v0, t2, im2_0); im2_1 = fma(v1, t2, im2_1); im2_2 = fma(v2, t2, im2_2); im2_3 = fma(v3, t2, im2_3);
    re3_0 = fma(v0, c3, re3_0); re3_1 = fma(v1, c3, re3_1); re3_2 = fma(v2, c3, re3_2); re3_3 = fma(v3, c3, re3_3);
    im3_0 = fma(v0, t3, im3_0); im3_1 = fma(v1, t3, im3_1); im3_2 = fma(v2, t3, im3_2); im3_3 = fma(v3, t3, im3_3);
  }
  store(f, k0, re0_0, im0_0); store(f + 4u, k0, re0_1, im0_1); store(f + 8u, k0, re0_2, im0_2); store(f + 12u, k0, re0_3, im0_3);
  store(f, k0 + 1u, re1_0, im1_0); store(f + 4u, k0 + 1u, re1_1, im1_1); store(f + 8u, k0 + 1u, re1_2, im1_2); store(f + 12u, k0 + 1u, re1_3, im1_3);
  store(f, k0 + 2u, re2_0, im2_0); store(f + 4u, k0 + 2u, re2_1, im2_1); store(f + 8u, k0 + 2u, re2_2, im2_2); store(f + 12u, k0 + 2u, re2_3, im2_3);
  store(f, k0 + 3u, re3_0, im3_0); store(f + 4u, k0 + 3u, re3_1, im3_1); store(f + 8u, k0 + 3u, re3_2, im3_2); store(f + 12u, k0 + 3u, re3_3, im3_3);
}
