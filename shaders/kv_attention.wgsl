// Causal grouped-query attention of T queries over one block of a KV cache, with an online softmax so a cache
// stored as several blocks (the partitioned KV cache) is one dispatch per block.
// q, out: (T, heads*D), query row t at absolute position start + t, already rotated; k, v: rows of kv_heads*D,
// row r of this block at absolute position pos0 + r, `len` rows valid. Query head h reads kv head
// h / (heads / kv_heads). Key j is visible to query t when j <= start + t (causal).
// One workgroup per (query row, head); the keys go in tiles of WG: each lane scores one key, the tile's max and
// sum are trees in workgroup memory, and each lane keeps output dims li, li+WG, ... (D <= 4*WG = 256).
// flags bit 0: first block (start from an empty state), bit 1: last block (write out = acc / l). Between
// blocks the running (max m, sum l, acc[D]) of each (row, head) lives in `state` (T*heads*(D+2) floats);
// a single-block call (flags 3) never touches it.
const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const NEG: f32 = -3.0e38;   // below any score: exp(NEG - m) is 0, and NEG - NEG is 0 (never inf - inf)

struct Params { t: u32, heads: u32, kv_heads: u32, d: u32, start: u32, pos0: u32, len: u32, flags: u32,
                scale: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = wid.x;
  let h = wid.y;
  let d = p.d;
  let row = t * p.heads + h;
  let kw = p.kv_heads * d;
  let kb = h / (p.heads / p.kv_heads) * d;
  for (var j = li; j < d; j += WG) { qs[j] = q[row * d + j] * p.scale; }

  var m = NEG;
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  let sb = row * (d + 2u);
  if ((p.flags & 1u) == 0u) {
    m = state[sb];
    l = state[sb + 1u];
    for (var c = 0u; c < 4u; c++) {
      let j = li + c * WG;
      if (j < d) { acc[c] = state[sb + 2u + j]; }
    }
  }
  workgroupBarrier();

  let limit = p.start + t + 1u;   // keys at absolute positions < limit are visible
  let n = min(p.len, select(0u, limit - p.pos0, limit > p.pos0));
  for (var base = 0u; base < n; base += WG) {
    let r = base + li;
    var s = NEG;
    if (r < n) {
      s = 0.0;
      let kr = r * kw + kb;
      for (var j = 0u; j < d; j++) { s += qs[j] * k[kr + j]; }
    }
    red[li] = s;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (li < st) { red[li] = max(red[li], red[li + st]); }
      workgroupBarrier();
    }
    let m_new = max(m, red[0]);
    workgroupBarrier();
    let e = select(0.0, exp(s - m_new), r < n);
    probs[li] = e;
    red[li] = e;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (li < st) { red[li] = red[li] + red[li + st]; }
      workgroupBarrier();
    }
    let corr = exp(m - m_new);
    l = l * corr + red[0];
    let count = min(WG, n - base);
    for (var c = 0u; c < 4u; c++) {
      let j = li + c * WG;
      if (j < d) {
        var a = acc[c] * corr;
        for (var i = 0u; i < count; i++) { a += probs[i] * v[(base + i) * kw + kb + j]; }
        acc[c] = a;
      }
    }
    m = m_new;
    workgroupBarrier();
  }

  if ((p.flags & 2u) != 0u) {
    for (var c = 0u; c < 4u; c++) {
      let j = li + c * WG;
      if (j < d) { out[row * d + j] = acc[c] / l; }
    }
  } else {
    if (li == 0u) {
      state[sb] = m;
      state[sb + 1u] = l;
    }
    for (var c = 0u; c < 4u; c++) {
      let j = li + c * WG;
      if (j < d) { state[sb + 2u + j] = acc[c]; }
    }
  }
}
