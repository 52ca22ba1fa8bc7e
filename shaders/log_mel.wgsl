// Whisper's log scaling of mel power (F, n_mels): L = log10(max(mel, 1e-10)), floored at max(L) - 8 over all F
// rows, then (L + 4) / 4; rows [start, start + rows) of it, each row at or past `end` written as zeros (the 30 s
// window zero-padded, as faster-whisper pads its features).
// The floor needs the max over every value before any output is written, and WGSL has no barrier across
// workgroups: one workgroup reduces the whole input (log10 is monotonic: the max of the clamped values,
// then one log10), then writes every output. A NaN anywhere makes the max NaN, and every kept row NaN, as
// the reference's. log10(v) = log2(v) * log10(2).
const WG: u32 = 64u;
const LOG10_2: f32 = 0.30102999566398120;

struct Params { F: u32, n_mels: u32, start: u32, rows: u32, end: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read> mel: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;

fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
// WGSL's max may return either operand when one is NaN: a NaN must win (as NumPy's maximum)
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
  let total = p.F * p.n_mels;
  var m = 1e-10;                   // the clamp: max(mel, 1e-10) everywhere
  for (var i = li; i < total; i += WG) { m = max_nan(m, mel[i]); }
  red[li] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) { red[li] = max_nan(red[li], red[li + k]); }
    workgroupBarrier();
  }
  let top = red[0];
  let lo = log2(top) * LOG10_2 - 8.0;
  // tested before the log: log2(NaN) is not NaN everywhere (SwiftShader reads ~128.6 from its exponent bits)
  let nan = is_nan(top);
  let qnan = bitcast<f32>(0x7fc00000u | p._p0);   // built at run time: Tint refuses NaN constants

  let kept = min(p.rows, select(0u, p.end - p.start, p.end > p.start)) * p.n_mels;   // rows below `end`
  let first = p.start * p.n_mels;
  for (var i = li; i < kept; i += WG) {
    let l = log2(max(mel[first + i], 1e-10)) * LOG10_2;
    // a NaN anywhere: the floor is NaN, so every kept value is, as max(L, NaN) in the reference
    out[i] = select((max(l, lo) + 4.0) * 0.25, qnan, nan);
  }
  for (var i = kept + li; i < p.rows * p.n_mels; i += WG) { out[i] = 0.0; }
}
