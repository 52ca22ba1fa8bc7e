// 1-D convolution over time: out[t, o] = act(bias[o] + sum_{c,k} xpad[t * stride + k, c] * weight[o, c, k]) with x
// (T, Cin) time-major, weight (Cout, Cin, K) as stored, xpad x with `pad` zero steps on both sides.
// Register-blocked and barrier-free, as the register-blocked matmuls (on software adapters a load costs far
// more than an FMA, and a load every invocation of a workgroup shares far less than one each makes): a
// workgroup owns 8 output channels (the same in every invocation: each weight load serves them all) and
// 64 x 16 time steps, each invocation 16 consecutive ones; per (k, c) an invocation loads 16 x values
// (zero where the step is padding) and 8 weights for 128 multiply-adds, kept as 16 x 2 vec4 accumulators.
// 64 invocations, no workgroup memory: the constrained tier runs it too. HAS_BIAS adds the bias, ACT 1u
// applies exact GELU after it (the fused epilogue).
// Dispatch (x, ceil(Cout / 8), z) with the time tiles over x (and z past the per-dimension limit).
override HAS_BIAS: bool = false;
override ACT: u32 = 0u;
const WG: u32 = 64u;
const RT: u32 = 16u;   // time steps per invocation
const RC: u32 = 8u;    // output channels per workgroup

struct Params { T: u32, cin: u32, cout: u32, K: u32, stride: u32, pad: u32, t_out: u32, ck: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// BEGIN prelude/erf.wgsl: copied in by shaders/generate.py, edit that file, not this region
// erf by Abramowitz & Stegun 7.1.26 (WGSL has none): |error| <= 1.5e-7 in exact arithmetic.
fn erf_as(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}
// END prelude/erf.wgsl

// channels o..o+3 of step t (those past the end are not stored), with the bias and the activation
fn write4(t: u32, o: u32, v: vec4<f32>) {
  if (t >= p.t_out) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (o + c < p.cout) {
      var y = v[c];
      if (HAS_BIAS) { y = y + bias[o + c]; }
      if (ACT == 1u) { y = 0.5 * y * (1.0 + erf_as(y * 0.7071067811865476)); }
      out[t * p.cout + o + c] = y;
    }
  }
}

// x's row of step r at channel 0, clamped into x (a padding step reads a real row; `ok` zeroes it)
fn row(r: i32) -> u32 { return u32(clamp(r, 0, i32(p.T) - 1)) * p.cin; }
fn inside(r: i32) -> bool { return r >= 0 && r < i32(p.T); }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let t0 = ((wid.z * nwg.x + wid.x) * WG + li) * RT;
  if (t0 >= p.t_out) { return; }
  let o0 = wid.y * RC;
  // the weight rows of the workgroup's channels (past Cout: the last row, computed and not stored)
  let top = vec4(p.cout - 1u);
  let wa = min(o0 + vec4(0u, 1u, 2u, 3u), top) * p.ck;
  let wb = min(o0 + vec4(4u, 5u, 6u, 7u), top) * p.ck;
  // a<i>, b<i>: step t0 + i, channels o0..o0+3 and o0+4..o0+7
  var a0 = vec4(0.0); var b0 = vec4(0.0);
  var a1 = vec4(0.0); var b1 = vec4(0.0);
  var a2 = vec4(0.0); var b2 = vec4(0.0);
  var a3 = vec4(0.0); var b3 = vec4(0.0);
  var a4 = vec4(0.0); var b4 = vec4(0.0);
  var a5 = vec4(0.0); var b5 = vec4(0.0);
  var a6 = vec4(0.0); var b6 = vec4(0.0);
  var a7 = vec4(0.0); var b7 = vec4(0.0);
  var a8 = vec4(0.0); var b8 = vec4(0.0);
  var a9 = vec4(0.0); var b9 = vec4(0.0);
  var a10 = vec4(0.0); var b10 = vec4(0.0);
  var a11 = vec4(0.0); var b11 = vec4(0.0);
  var a12 = vec4(0.0); var b12 = vec4(0.0);
  var a13 = vec4(0.0); var b13 = vec4(0.0);
  var a14 = vec4(0.0); var b14 = vec4(0.0);
  var a15 = vec4(0.0); var b15 = vec4(0.0);
  for (var k = 0u; k < p.K; k++) {
    let s = i32(t0 * p.stride + k) - i32(p.pad);   // the input step of t0 at tap k
    let st = i32(p.stride);
    let r0 = s; let x0 = row(r0); let ok0 = inside(r0);
    let r1 = s + 1 * st; let x1 = row(r1); let ok1 = inside(r1);
    let r2 = s + 2 * st; let x2 = row(r2); let ok2 = inside(r2);
    let r3 = s + 3 * st; let x3 = row(r3); let ok3 = inside(r3);
    let r4 = s + 4 * st; let x4 = row(r4); let ok4 = inside(r4);
    let r5 = s + 5 * st; let x5 = row(r5); let ok5 = inside(r5);
    let r6 = s + 6 * st; let x6 = row(r6); let ok6 = inside(r6);
    let r7 = s + 7 * st; let x7 = row(r7); let ok7 = inside(r7);
    let r8 = s + 8 * st; let x8 = row(r8); let ok8 = inside(r8);
    let r9 = s + 9 * st; let x9 = row(r9); let ok9 = inside(r9);
    let r10 = s + 10 * st; let x10 = row(r10); let ok10 = inside(r10);
    let r11 = s + 11 * st; let x11 = row(r11); let ok11 = inside(r11);
    let r12 = s + 12 * st; let x12 = row(r12); let ok12 = inside(r12);
    let r13 = s + 13 * st; let x13 = row(r13); let ok13 = inside(r13);
    let r14 = s + 14 * st; let x14 = row(r14); let ok14 = inside(r14);
    let r15 = s + 15 * st; let x15 = row(r15); let ok15 = inside(r15);
    for (var c = 0u; c < p.cin; c++) {
      let j = c * p.K + k;
      let wa4 = vec4(w[wa.x + j], w[wa.y + j], w[wa.z + j], w[wa.w + j]);
      let wb4 = vec4(w[wb.x + j], w[wb.y + j], w[wb.z + j], w[wb.w + j]);
      let v0 = vec4(select(0.0, x[x0 + c], ok0)); a0 = fma(v0, wa4, a0); b0 = fma(v0, wb4, b0);
      let v1 = vec4(select(0.0, x[x1 + c], ok1)); a1 = fma(v1, wa4, a1); b1 = fma(v1, wb4, b1);
      let v2 = vec4(select(0.0, x[x2 + c], ok2)); a2 = fma(v2, wa4, a2); b2 = fma(v2, wb4, b2);
      let v3 = vec4(select(0.0, x[x3 + c], ok3)); a3 = fma(v3, wa4, a3); b3 = fma(v3, wb4, b3);
      let v4 = vec4(select(0.0, x[x4 + c], ok4)); a4 = fma(v4, wa4, a4); b4 = fma(v4, wb4, b4);
      let v5 = vec4(select(0.0, x[x5 + c], ok5)); a5 = fma(v5, wa4, a5); b5 = fma(v5, wb4, b5);
      let v6 = vec4(select(0.0, x[x6 + c], ok6)); a6 = fma(v6, wa4, a6); b6 = fma(v6, wb4, b6);
      let v7 = vec4(select(0.0, x[x7 + c], ok7)); a7 = fma(v7, wa4, a7); b7 = fma(v7, wb4, b7);
      let v8 = vec4(select(0.0, x[x8 + c], ok8)); a8 = fma(v8, wa4, a8); b8 = fma(v8, wb4, b8);
      let v9 = vec4(select(0.0, x[x9 + c], ok9)); a9 = fma(v9, wa4, a9); b9 = fma(v9, wb4, b9);
      let v10 = vec4(select(0.0, x[x10 + c], ok10)); a10 = fma(v10, wa4, a10); b10 = fma(v10, wb4, b10);
      let v11 = vec4(select(0.0, x[x11 + c], ok11)); a11 = fma(v11, wa4, a11); b11 = fma(v11, wb4, b11);
      let v12 = vec4(select(0.0, x[x12 + c], ok12)); a12 = fma(v12, wa4, a12); b12 = fma(v12, wb4, b12);
      let v13 = vec4(select(0.0, x[x13 + c], ok13)); a13 = fma(v13, wa4, a13); b13 = fma(v13, wb4, b13);
      let v14 = vec4(select(0.0, x[x14 + c], ok14)); a14 = fma(v14, wa4, a14); b14 = fma(v14, wb4, b14);
      let v15 = vec4(select(0.0, x[x15 + c], ok15)); a15 = fma(v15, wa4, a15); b15 = fma(v15, wb4, b15);
    }
  }
  write4(t0 + 0u, o0, a0); write4(t0 + 0u, o0 + 4u, b0);
  write4(t0 + 1u, o0, a1); write4(t0 + 1u, o0 + 4u, b1);
  write4(t0 + 2u, o0, a2); write4(t0 + 2u, o0 + 4u, b2);
  write4(t0 + 3u, o0, a3); write4(t0 + 3u, o0 + 4u, b3);
  write4(t0 + 4u, o0, a4); write4(t0 + 4u, o0 + 4u, b4);
  write4(t0 + 5u, o0, a5); write4(t0 + 5u, o0 + 4u, b5);
  write4(t0 + 6u, o0, a6); write4(t0 + 6u, o0 + 4u, b6);
  write4(t0 + 7u, o0, a7); write4(t0 + 7u, o0 + 4u, b7);
  write4(t0 + 8u, o0, a8); write4(t0 + 8u, o0 + 4u, b8);
  write4(t0 + 9u, o0, a9); write4(t0 + 9u, o0 + 4u, b9);
  write4(t0 + 10u, o0, a10); write4(t0 + 10u, o0 + 4u, b10);
  write4(t0 + 11u, o0, a11); write4(t0 + 11u, o0 + 4u, b11);
  write4(t0 + 12u, o0, a12); write4(t0 + 12u, o0 + 4u, b12);
  write4(t0 + 13u, o0, a13); write4(t0 + 13u, o0 + 4u, b13);
  write4(t0 + 14u, o0, a14); write4(t0 + 14u, o0 + 4u, b14);
  write4(t0 + 15u, o0, a15); write4(t0 + 15u, o0 + 4u, b15);
}
