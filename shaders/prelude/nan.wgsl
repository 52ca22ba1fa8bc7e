// WGSL's max may return either operand when one is NaN: a NaN score must make the row NaN (as NumPy).
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn max_nan(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// inf or NaN, by the bits: arithmetic on them is not IEEE everywhere (SwiftShader folds 0 * NaN to 0)
fn special(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
fn neg_inf(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }
