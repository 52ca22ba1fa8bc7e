// Multi-head attention for long sequences, head_dim <= 64: out = softmax(Q K^T * scale + mask) V.
// q: (B, Sq, H*D), k and v: (B, Sk, H*D), mask: (B, Sk) additive, out: (B, Sq, H*D).
// One invocation per query row, WG rows of one head per workgroup: each tile of TK keys and values is staged once
// in workgroup memory and read by all WG rows, and each row keeps its own online softmax (running max and sum,
// rescaled once per tile) in registers. attention.wgsl gives a whole workgroup to each row and reduces across it
// twice per 64 keys; for Whisper's 1500 x 1500 heads that is 24x the barriers for the same arithmetic.
// Same bindings, parameters and NaN/infinity rules as attention.wgsl (the planner picks this one for long Sq), and
// its CAUSAL: query i sees keys 0..i only.
override HAS_MASK: bool = false;
override CAUSAL: bool = false;
const WG: u32 = 64u;      // query rows per workgroup
const TK: u32 = 7u;       // keys per tile: K and V tiles in 3.6 KiB, within every tier's 4 KiB
const MAX_D: u32 = 64u;   // head_dim limit (registers: q, the accumulator and a tile of scores per row)

struct Params {
  sq: u32, sk: u32, heads: u32, head_dim: u32,
  scale: f32, mask_batch_stride: u32, q0: u32, h0: u32,
  b0: u32, row_base: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const V4: u32 = MAX_D / 4u;
var<workgroup> ks: array<vec4<f32>, TK * V4>;   // a tile's keys and values, head dims as vec4s, zero past head_dim
var<workgroup> vs: array<vec4<f32>, TK * V4>;
var<workgroup> ms: array<f32, TK>;

// BEGIN prelude/nan.wgsl: copied in by shaders/generate.py, edit that file, not this region
// WGSL's max may return either operand when one is NaN: a NaN score must make the row NaN (as NumPy).
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
fn neg_inf(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }
// END prelude/nan.wgsl

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let h = wid.y + p.h0;
  let b = wid.z + p.b0;
  let i = wid.x * WG + li + p.q0;
  let live = i < p.sq;                 // no early return: every invocation reaches the barriers
  let d_n = p.head_dim;
  let hd = p.heads * d_n;
  let q_base = (b * p.sq + i - p.row_base) * hd + h * d_n;

  var qv: array<vec4<f32>, V4>;
  var acc: array<vec4<f32>, V4>;
  var s: array<f32, TK>;
  for (var c = 0u; c < V4; c++) {
    acc[c] = vec4<f32>(0.0);
    var x = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
      let d = c * 4u + r;
      if (live && d < d_n) { x[r] = q[q_base + d] * p.scale; }
    }
    qv[c] = x;
  }
  let nan = bitcast<f32>(0x7fc00000u | p._p0);   // built at run time: Tint refuses NaN constants
  let ninf = bitcast<f32>(0xff800000u | p._p0);
  var m = ninf;                                   // no score seen yet
  var l = 0.0;

  let ntiles = (p.sk + TK - 1u) / TK;
  for (var t = 0u; t < ntiles; t++) {
    let j0 = t * TK;
    let nj = min(TK, p.sk - j0);
    for (var e = li; e < TK * V4; e += WG) {
      let jj = e / V4;
      let c = e % V4;
      var kx = vec4<f32>(0.0);
      var vx = vec4<f32>(0.0);
      for (var r = 0u; r < 4u; r++) {
        let d = c * 4u + r;
        if (jj < nj && d < d_n) {
          let at = (b * p.sk + j0 + jj) * hd + h * d_n + d;
          kx[r] = k[at];
          vx[r] = v[at];
        }
      }
      ks[e] = kx;
      vs[e] = vx;
    }
    if (HAS_MASK && li < nj) { ms[li] = mask[b * p.mask_batch_stride + j0 + li]; }
    workgroupBarrier();

    if (live) {
      var tmax = ninf;
      for (var jj = 0u; jj < nj; jj++) {
        var dot4 = vec4<f32>(0.0);
        for (var c = 0u; c < V4; c++) { dot4 = fma(qv[c], ks[jj * V4 + c], dot4); }
        var sc = (dot4.x + dot4.y) + (dot4.z + dot4.w);
        if (HAS_MASK) { sc = sc + ms[jj]; }
        if (CAUSAL && j0 + jj > i) { sc = ninf; }
        s[jj] = sc;
        tmax = max_nan(tmax, sc);
      }
      let m_new = max_nan(m, tmax);
      if (!neg_inf(m_new)) {                      // all -inf so far: nothing to weigh yet
        let corr = select(exp(m - m_new), 0.0, neg_inf(m));
        var sum = 0.0;
        for (var c = 0u; c < V4; c++) { acc[c] = acc[c] * corr; }
        for (var jj = 0u; jj < nj; jj++) {
          let e = select(exp(s[jj] - m_new), 0.0, neg_inf(s[jj]));   // a causally hidden key weighs exactly 0
          sum = sum + e;
          for (var c = 0u; c < V4; c++) { acc[c] = fma(vec4<f32>(e), vs[jj * V4 + c], acc[c]); }
        }
        l = l * corr + sum;
        m = m_new;
      }
    }
    workgroupBarrier();
  }

  // a NaN or +inf score, or only -inf ones: NaN, as the max-subtracted reference gives
  if (live) {
    let bad = special(m);
    for (var d = 0u; d < d_n; d++) { out[q_base + d] = select(acc[d / 4u][d % 4u] / l, nan, bad); }
  }
}
