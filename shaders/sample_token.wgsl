// The next token id of a language model, chosen from its logits (V,) on the device so that a decode step reads
// back 4 bytes, not V floats (ops.sample_token; references.sample_token_ref states the semantics). Hugging
// Face's order: y = a seen token's logit (bit i % 32 of seen[i / 32]) divided by the repetition penalty when
// > 0, multiplied when <= 0; temperature 0 (greedy): the first index of max(y), a NaN counting as the max (a
// NaN answers its first index at any temperature: no distribution exists); else z = y / temperature, top-k
// (keep z >= the k-th largest), top-p (keep z >= the largest threshold whose softmax mass reaches top_p, every
// value tied with it kept) and the inverse CDF in index order: the first id whose cumulative weight exceeds
// u * total.
// One workgroup does it all in one dispatch, y computed on the fly at each read. Dividing by the temperature
// keeps y's order, so the thresholds are found on y's order-preserving u32 key by bisection (the largest key t
// whose pass holds): top-k by counts of key >= t, top-p by masses sum(exp((y - max) / T)) over key >= t, each
// pass one workgroup reduction (at most 32 passes each). The draw: the kept mass of contiguous per-invocation
// chunks in index order, an inclusive scan, and the invocation whose chunk holds u * total walks it.
// No NaN or infinity behaviour of a builtin is relied on: keys are bit patterns, the ids at the max weigh
// exactly 1 (so +inf logits share the mass and a row of -inf is uniform), a weight under exp(-87) (a float32
// subnormal a GPU may flush) and any -inf is 0, and every other difference is finite.
// Bindings: logits (f32), seen (u32 words; read only with HAS_SEEN), out (u32, 1), uniforms.
override WG: u32 = 256u;          // the planner's workgroup size: a power of two, at most MAX_WG
override HAS_SEEN: bool = false;  // a repetition penalty != 1 on a seen mask
const MAX_WG: u32 = 256u;
const NAN_KEY: u32 = 0xffffffffu;

struct Params {
  v: u32, top_k: u32, greedy: u32, top_p_on: u32,   // top_k 0: off (the host passes 0 unless 0 < k < V)
  temperature: f32, top_p: f32, penalty: f32, u: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> seen: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red_k: array<u32, MAX_WG>;   // keys, counts, chunks
var<workgroup> red_i: array<u32, MAX_WG>;   // the argmax's indices
var<workgroup> red_f: array<f32, MAX_WG>;   // masses, the scan

// BEGIN prelude/nan.wgsl: copied in by shaders/generate.py, edit that file, not this region
// WGSL's max may return either operand when one is NaN: a NaN score must make the row NaN (as NumPy).
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
fn neg_inf(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }
// END prelude/nan.wgsl

// y: the logit after the repetition penalty (a NaN left as it is)
fn value(i: u32) -> f32 {
  let x = logits[i];
  if (HAS_SEEN && ((seen[i >> 5u] >> (i & 31u)) & 1u) == 1u && !is_nan(x)) {
    return select(x * p.penalty, x / p.penalty, x > 0.0);
  }
  return x;
}

// y's order as u32: -inf smallest, -0 read as +0 (they compare equal), +inf below NAN_KEY, every NaN NAN_KEY
fn key(y: f32) -> u32 {
  let b = bitcast<u32>(y);
  if (is_nan(y)) { return NAN_KEY; }
  if (b == 0x80000000u) { return 0x80000000u; }
  return select(b | 0x80000000u, ~b, b >= 0x80000000u);
}

// exp((y - top) / T) of an id at or below the max `top` (its key top_key), 0 under exp(-87)
fn weight(y: f32, k: u32, top: f32, top_key: u32) -> f32 {
  if (k == top_key) { return 1.0; }
  if (special(top) || neg_inf(y)) { return 0.0; }   // below +inf, or -inf below a larger max
  let d = (y - top) / p.temperature;                 // -inf at worst (a finite overflow)
  return select(exp(d), 0.0, d < -87.0);
}

// the workgroup's sum of each invocation's `c` (every invocation calls it, in uniform control flow)
fn count_sum(li: u32, c: u32) -> u32 {
  workgroupBarrier();                                // earlier reads of red_k are done
  red_k[li] = c;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red_k[li] += red_k[li + s]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_k[0]);
}

fn mass_sum(li: u32, m: f32) -> f32 {
  workgroupBarrier();
  red_f[li] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red_f[li] += red_f[li + s]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_f[0]);
}

// how many ids have key >= t
fn count_at_least(li: u32, t: u32) -> u32 {
  var c = 0u;
  for (var i = li; i < p.v; i += WG) { c += select(0u, 1u, key(value(i)) >= t); }
  return count_sum(li, c);
}

// the weight of the ids with key >= t
fn mass_at_least(li: u32, t: u32, top: f32, top_key: u32) -> f32 {
  var m = 0.0;
  for (var i = li; i < p.v; i += WG) {
    let y = value(i);
    let k = key(y);
    if (k >= t) { m += weight(y, k, top, top_key); }
  }
  return mass_sum(li, m);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
  // 1. the argmax as (key, index): the largest key, the first index among equal keys
  var bk = 0u;                       // below every key (-inf's is 0x007fffff)
  var bi = 0xffffffffu;
  for (var i = li; i < p.v; i += WG) {
    let k = key(value(i));
    if (k > bk) { bk = k; bi = i; }  // ascending indices: the first of equal keys stays
  }
  red_k[li] = bk;
  red_i[li] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ok = red_k[li + s];
      let oi = red_i[li + s];
      if (ok > red_k[li] || (ok == red_k[li] && oi < red_i[li])) { red_k[li] = ok; red_i[li] = oi; }
    }
    workgroupBarrier();
  }
  let top_key = workgroupUniformLoad(&red_k[0]);
  let top_i = workgroupUniformLoad(&red_i[0]);
  if (p.greedy != 0u || top_key == NAN_KEY) {
    if (li == 0u) { out[0] = top_i; }
    return;
  }
  let top = value(top_i);

  // 2. top-k: the largest t with count(key >= t) >= k, the k-th largest key (t = 0 keeps every id)
  var t = 0u;
  if (p.top_k != 0u) {
    var hi = top_key;
    loop {
      if (t >= hi) { break; }
      let mid = t + (hi - t + 1u) / 2u;
      if (count_at_least(li, mid) >= p.top_k) { t = mid; } else { hi = mid - 1u; }
    }
  }

  // 3. top-p: the largest t' >= t whose kept mass reaches top_p of what top-k kept (t itself holds all of it)
  if (p.top_p_on != 0u) {
    let want = p.top_p * mass_at_least(li, t, top, top_key);
    var hi = top_key;
    loop {
      if (t >= hi) { break; }
      let mid = t + (hi - t + 1u) / 2u;
      if (mass_at_least(li, mid, top, top_key) >= want) { t = mid; } else { hi = mid - 1u; }
    }
  }

  // 4. the draw: each invocation's contiguous chunk of ids, its kept mass, an inclusive scan of the masses
  let chunk = (p.v + WG - 1u) / WG;
  let start = min(li * chunk, p.v);
  let end = min(start + chunk, p.v);
  var c = 0.0;
  for (var i = start; i < end; i++) {
    let y = value(i);
    let k = key(y);
    if (k >= t) { c += weight(y, k, top, top_key); }
  }
  workgroupBarrier();
  red_f[li] = c;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    let add = select(0.0, red_f[max(li, off) - off], li >= off);
    workgroupBarrier();
    red_f[li] += add;
    workgroupBarrier();
  }
  let before = select(0.0, red_f[max(li, 1u) - 1u], li > 0u);   // the mass of the chunks before this one
  let total = workgroupUniformLoad(&red_f[WG - 1u]);
  let goal = p.u * total;
  // the chunk holding goal: the last chunk with mass whose prefix is <= goal (0: none, never: the max
  // weighs 1 and is kept, and the first chunk's prefix is 0)
  let chosen = max_chunk(li, select(0u, li + 1u, c > 0.0 && before <= goal));
  if (chosen == 0u) {
    if (li == 0u) { out[0] = top_i; }
    return;
  }
  if (li + 1u == chosen) {
    // the first id whose running mass exceeds goal; the chunk's last id with mass where rounding leaves
    // goal at or past the chunk's end
    let r = goal - before;
    var s = 0.0;
    var last = start;
    for (var i = start; i < end; i++) {
      let y = value(i);
      let k = key(y);
      if (k >= t) {
        let w = weight(y, k, top, top_key);
        if (w > 0.0) {
          s += w;
          last = i;
          if (s > r) { break; }
        }
      }
    }
    out[0] = last;
  }
}

// the largest of each invocation's `c`
fn max_chunk(li: u32, c: u32) -> u32 {
  workgroupBarrier();
  red_k[li] = c;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red_k[li] = max(red_k[li], red_k[li + s]); }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_k[0]);
}
