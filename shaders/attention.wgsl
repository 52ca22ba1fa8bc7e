// Multi-head attention: out = softmax(Q K^T * scale + mask) V per (batch, head, query row).
// q: (B, Sq, H*D), k and v: (B, Sk, H*D), mask: (B, Sk) additive, out: (B, Sq, H*D).
// One workgroup per (query, head, batch) walks the keys in blocks of WG with an online softmax
// (running max and sum, rescaled per block), so no (Sq, Sk) score matrix is ever stored and any Sk works.
// q0, h0, b0 offset the grid: one dispatch may cover a range of queries, heads or batches (the chunked
// attention and head partitioning strategies). q and out may hold only some rows of (B*Sq): row_base is the
// first row they hold (a block of a tensor the constrained tier stores as several buffers). CAUSAL: query i sees
// keys 0..i only (a text tower's self-attention).
override HAS_MASK: bool = false;
override CAUSAL: bool = false;
const WG: u32 = 64u;
const MAX_D: u32 = 256u;   // head_dim limit: each invocation owns MAX_D / WG output dims
const PER: u32 = 4u;

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

var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

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
  let i = wid.x + p.q0;
  let h = wid.y + p.h0;
  let b = wid.z + p.b0;
  let hd = p.heads * p.head_dim;
  let q_base = (b * p.sq + i - p.row_base) * hd + h * p.head_dim;
  for (var d = li; d < p.head_dim; d += WG) { qs[d] = q[q_base + d] * p.scale; }
  workgroupBarrier();

  let nan = bitcast<f32>(0x7fc00000u | p._p0);      // built at run time: Tint refuses NaN constants
  var m = bitcast<f32>(0xff800000u | p._p0);        // -inf: no score seen yet
  var l = 0.0;
  var acc: array<f32, PER>;
  for (var r = 0u; r < PER; r++) { acc[r] = 0.0; }

  let nblocks = (p.sk + WG - 1u) / WG;
  for (var blk = 0u; blk < nblocks; blk++) {
    let j = blk * WG + li;
    let valid = j < p.sk && !(CAUSAL && j > i);
    var s = -3.402823e38;
    if (valid) {
      let k_base = (b * p.sk + j) * hd + h * p.head_dim;
      var dot = 0.0;
      for (var d = 0u; d < p.head_dim; d++) { dot = fma(qs[d], k[k_base + d], dot); }
      s = dot;
      if (HAS_MASK) { s = s + mask[b * p.mask_batch_stride + j]; }
    }
    red[li] = s;
    workgroupBarrier();
    for (var t = WG / 2u; t > 0u; t >>= 1u) {
      if (li < t) { red[li] = max_nan(red[li], red[li + t]); }
      workgroupBarrier();
    }
    let m_new = max_nan(m, red[0]);
    workgroupBarrier();

    var e = 0.0;
    if (valid && !neg_inf(m_new)) { e = exp(s - m_new); }   // all -inf so far: nothing to weigh yet
    probs[li] = e;
    red[li] = e;
    workgroupBarrier();
    for (var t = WG / 2u; t > 0u; t >>= 1u) {
      if (li < t) { red[li] = red[li] + red[li + t]; }
      workgroupBarrier();
    }
    let corr = select(exp(m - m_new), 1.0, neg_inf(m_new));
    l = l * corr + red[0];
    let nj = min(WG, p.sk - blk * WG);
    for (var r = 0u; r < PER; r++) {
      let d = li + r * WG;
      if (d < p.head_dim) {
        var a = acc[r] * corr;
        let v_base = (b * p.sk + blk * WG) * hd + h * p.head_dim + d;
        for (var jj = 0u; jj < nj; jj++) { a = fma(probs[jj], v[v_base + jj * hd], a); }
        acc[r] = a;
      }
    }
    m = m_new;
    workgroupBarrier();
  }

  // a NaN or +inf score, or only -inf ones: NaN, as the max-subtracted reference gives
  let bad = special(m);
  for (var r = 0u; r < PER; r++) {
    let d = li + r * WG;
    if (d < p.head_dim) { out[q_base + d] = select(acc[r] / l, nan, bad); }
  }
}
