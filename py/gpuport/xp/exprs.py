"""The one table of element-wise functions: for each, its WGSL per kind of dtype and its NumPy twin, with the
standard's semantics for NaN, infinities, signed zeros and integer overflow written out in both.

A template's `{0}`, `{1}`, `{2}` are its arguments' WGSL expressions and `{T}` the compute type ("i32", "u32",
"f32", "f16", "bool"). Kinds: "b" bool, "i" signed and "u" unsigned integers (computed in 32 bits; the code
generator wraps 8- and 16-bit results back into range), "f" floats (float32 computes in f32; float16 in f16 for
the templates that are exact in any precision, through f32 for the `widen` ones, whose helpers are written in f32
once). The helpers test NaN by its bits, never `x != x` (which compilers may fold away), and make NaN and infinity
at run time (a constant one is a shader-creation error).

The NumPy twins run the cpu tier and host placements; where NumPy departs from the standard (floor division by an
infinity, integers to negative powers) they follow the device so both sides give the same values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

HELPERS: dict[str, tuple[str, tuple[str, ...]]] = {}   # name -> (WGSL source, helpers it calls)


PROVIDES: dict[str, str] = {}   # helper function -> the helper group that defines it


def _helper(name: str, source: str, *deps: str) -> None:
    HELPERS[name] = (source.strip() + "\n", deps)
    for fn in re.findall(r"\bfn (xp_\w+)\(", source):
        PROVIDES[fn] = name


_helper("xp_base", """
var<private> xp_nan_bits: u32 = 0x7fc00000u;
var<private> xp_inf_bits: u32 = 0x7f800000u;
fn xp_nan() -> f32 { return bitcast<f32>(xp_nan_bits); }
fn xp_inf() -> f32 { return bitcast<f32>(xp_inf_bits); }
fn xp_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn xp_isinf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }
fn xp_isfinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
fn xp_iszero(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0u; }
fn xp_signbit(x: f32) -> bool { return (bitcast<u32>(x) & 0x80000000u) != 0u; }
fn xp_copysign(x: f32, s: f32) -> f32 {
  return bitcast<f32>((bitcast<u32>(x) & 0x7fffffffu) | (bitcast<u32>(s) & 0x80000000u));
}""")
_helper("xp_exp", """
fn xp_exp(x: f32) -> f32 {
  if (xp_isnan(x)) { return x; }
  if (xp_isinf(x)) { return select(0.0, x, x > 0.0); }
  return exp(x);
}""", "xp_base")
_helper("xp_expm1", """
fn xp_expm1(x: f32) -> f32 {
  if (xp_isnan(x) || xp_iszero(x)) { return x; }
  if (xp_isinf(x)) { return select(-1.0, x, x > 0.0); }
  let u = exp(x);
  if (u == 1.0) { return x; }
  if (xp_isinf(u)) { return u; }
  let um1 = u - 1.0;
  if (um1 == -1.0) { return -1.0; }
  return um1 * (x / log(u));
}""", "xp_base")
_helper("xp_log", """
fn xp_logk(x: f32, k: f32) -> f32 {
  if (xp_isnan(x) || x < 0.0) { return xp_nan(); }
  if (xp_iszero(x)) { return -xp_inf(); }
  if (xp_isinf(x) || x == 1.0) { return select(x, 0.0, x == 1.0); }
  return log2(x) * k;
}""", "xp_base")
_helper("xp_log1p", """
fn xp_log1p(x: f32) -> f32 {
  if (xp_isnan(x) || x < -1.0) { return xp_nan(); }
  if (x == -1.0) { return -xp_inf(); }
  if (xp_iszero(x) || xp_isinf(x)) { return x; }
  let u = 1.0 + x;
  if (u == 1.0) { return x; }
  return log(u) * (x / (u - 1.0));
}""", "xp_base")
_helper("xp_sqrt", """
fn xp_sqrt(x: f32) -> f32 { return select(sqrt(x), xp_nan(), x < 0.0); }""", "xp_base")
_helper("xp_trig", """
// WGSL bounds sin and cos only over [-pi, pi]: larger arguments are reduced modulo 2 pi first, exactly (Payne and
// Hanek): the fraction of |x| / (2 pi) from x's 24-bit mantissa times the 64 bits of 1 / (2 pi) at x's exponent
// (a table of its first 192 bits), as a 32-bit fixed-point turn, then back to radians in [-pi, pi)
fn xp_mulhi(a: u32, b: u32) -> u32 {
  let a0 = a & 0xffffu; let a1 = a >> 16u; let b0 = b & 0xffffu; let b1 = b >> 16u;
  let p01 = a0 * b1; let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}
fn xp_reduce(x: f32) -> f32 {
  var t = array<u32, 7>(0x28be60dbu, 0x9391054au, 0x7f09d5f4u, 0x7d4d3770u, 0x36d8a566u, 0x4f10e410u, 0u);
  let bits = bitcast<u32>(x);
  let m = (bits & 0x007fffffu) | 0x00800000u;
  let start = i32((bits >> 23u) & 0xffu) - 150;   // |x| = m * 2**start: the window begins after bit `start`
  var hi: u32;
  var lo: u32;
  if (start < 0) {
    let k = u32(-start);
    hi = t[0] >> k;
    lo = (t[0] << (32u - k)) | (t[1] >> k);
  } else {
    let w = u32(start) / 32u;
    let b = u32(start) % 32u;
    if (b == 0u) { hi = t[w]; lo = t[w + 1u]; }
    else {
      hi = (t[w] << b) | (t[w + 1u] >> (32u - b));
      lo = (t[w + 1u] << b) | (t[w + 2u] >> (32u - b));
    }
  }
  let turn = m * hi + xp_mulhi(m, lo);   // the fraction of |x| / (2 pi), in units of 2**-32 (wrapping: mod 1)
  let r = f32(bitcast<i32>(turn)) * 1.4629180792671596e-09;   // 2 pi / 2**32: radians in [-pi, pi)
  return select(r, -r, x < 0.0);
}
// the common case first: |x| <= pi needs no reduction (NaN fails the test and takes the slow path)
fn xp_sin(x: f32) -> f32 {
  if (abs(x) <= 3.140625) { return select(sin(x), x, xp_iszero(x)); }
  if (!xp_isfinite(x)) { return xp_nan(); }
  return sin(xp_reduce(x));
}
fn xp_cos(x: f32) -> f32 {
  if (abs(x) <= 3.140625) { return cos(x); }
  if (!xp_isfinite(x)) { return xp_nan(); }
  return cos(xp_reduce(x));
}
fn xp_tan(x: f32) -> f32 {
  if (abs(x) <= 3.140625) { return select(tan(x), x, xp_iszero(x)); }
  if (!xp_isfinite(x)) { return xp_nan(); }
  let r = xp_reduce(x);
  return sin(r) / cos(r);
}
fn xp_asin(x: f32) -> f32 {
  if (xp_isnan(x) || abs(x) > 1.0) { return xp_nan(); }
  if (xp_iszero(x)) { return x; }
  return asin(x);
}
fn xp_acos(x: f32) -> f32 {
  if (xp_isnan(x) || abs(x) > 1.0) { return xp_nan(); }
  if (x == 1.0) { return 0.0; }
  return acos(x);
}
fn xp_atan(x: f32) -> f32 {
  if (xp_isnan(x) || xp_iszero(x)) { return x; }
  if (xp_isinf(x)) { return xp_copysign(1.5707963267948966, x); }
  return atan(x);
}""", "xp_base")
_helper("xp_hyperbolic", """
fn xp_sinh(x: f32) -> f32 {
  if (xp_isnan(x) || xp_iszero(x) || xp_isinf(x)) { return x; }
  if (abs(x) < 1.0) { let e = xp_expm1(abs(x)); return xp_copysign(0.5 * (e + e / (e + 1.0)), x); }
  return sinh(x);
}
fn xp_cosh(x: f32) -> f32 {
  if (xp_isnan(x)) { return x; }
  if (xp_isinf(x)) { return abs(x); }
  return cosh(x);
}
fn xp_tanh(x: f32) -> f32 {
  if (xp_isnan(x) || xp_iszero(x)) { return x; }
  if (abs(x) > 10.0) { return xp_copysign(1.0, x); }
  let e = xp_expm1(2.0 * abs(x));
  return xp_copysign(e / (e + 2.0), x);
}
fn xp_asinh(x: f32) -> f32 {
  if (xp_isnan(x) || xp_iszero(x) || xp_isinf(x)) { return x; }
  let a = abs(x);
  if (a > 1e18) { return xp_copysign(log(a) + 0.6931471805599453, x); }
  return xp_copysign(xp_log1p(a + a * a / (1.0 + sqrt(1.0 + a * a))), x);
}
fn xp_acosh(x: f32) -> f32 {
  if (xp_isnan(x) || x < 1.0) { return xp_nan(); }
  if (x == 1.0) { return 0.0; }
  if (xp_isinf(x)) { return x; }
  if (x > 1e18) { return log(x) + 0.6931471805599453; }
  let t = x - 1.0;
  return xp_log1p(t + sqrt(2.0 * t + t * t));
}
fn xp_atanh(x: f32) -> f32 {
  if (xp_isnan(x) || abs(x) > 1.0) { return xp_nan(); }
  if (abs(x) == 1.0) { return xp_copysign(xp_inf(), x); }
  if (xp_iszero(x)) { return x; }
  return 0.5 * xp_copysign(xp_log1p(2.0 * abs(x) / (1.0 - abs(x))), x);
}""", "xp_expm1", "xp_log1p")
_helper("xp_atan2", """
fn xp_atan2(y: f32, x: f32) -> f32 {
  let pi = 3.141592653589793;
  if (xp_isnan(y) || xp_isnan(x)) { return xp_nan(); }
  if (xp_iszero(y)) { return select(y, xp_copysign(pi, y), xp_signbit(x)); }
  if (xp_iszero(x)) { return xp_copysign(0.5 * pi, y); }
  if (xp_isinf(y)) {
    if (xp_isinf(x)) { return xp_copysign(select(0.25 * pi, 0.75 * pi, x < 0.0), y); }
    return xp_copysign(0.5 * pi, y);
  }
  if (xp_isinf(x)) { return xp_copysign(select(0.0, pi, x < 0.0), y); }
  return atan2(y, x);
}""", "xp_base")
# WGSL's x / y is accurate (2.5 ulp) only for |y| in [2^-126, 2^126], and a device may take 1 / y first: NVIDIA's Vulkan
# driver does, so 1 / 3e38 flushed to 0 and inf / 3e38 read NaN, 10 / 3e38 read 0. Beyond 2^126 both operands are
# scaled by 2^-4 first (exact, except for an `a` under 2^-122, whose quotient underflows anyway).
_helper("xp_div", """
fn xp_div(a: f32, b: f32) -> f32 {
  let s = select(1.0, 0.0625, abs(b) > 8.507059e37);
  return (a * s) / (b * s);
}""")
_helper("xp_hypot", """
fn xp_hypot(a: f32, b: f32) -> f32 {
  if (xp_isinf(a) || xp_isinf(b)) { return xp_inf(); }
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  let m = max(abs(a), abs(b));
  if (m == 0.0) { return 0.0; }
  let r = xp_div(min(abs(a), abs(b)), m);
  return m * sqrt(1.0 + r * r);
}""", "xp_base", "xp_div")
_helper("xp_logaddexp", """
fn xp_logaddexp(a: f32, b: f32) -> f32 {
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  if (xp_isinf(a) && xp_isinf(b) && a == b) { return a; }
  let m = select(b, a, a > b);
  return m + xp_log1p(exp(-abs(a - b)));
}""", "xp_log1p")
_helper("xp_pow", """
fn xp_pow(a: f32, b: f32) -> f32 {
  if (xp_iszero(b) || a == 1.0) { return 1.0; }
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  let ab = abs(a);
  if (xp_isinf(b)) {
    if (ab == 1.0) { return 1.0; }
    return select(0.0, xp_inf(), (ab > 1.0) == (b > 0.0));
  }
  let whole = trunc(b) == b;
  let odd = whole && abs(b) < 16777216.0 && (i32(abs(b)) & 1) == 1;
  if (xp_isinf(a) || xp_iszero(a)) {
    let mag = select(0.0, xp_inf(), xp_isinf(a) == (b > 0.0));
    return select(mag, -mag, odd && xp_signbit(a));
  }
  if (a < 0.0 && !whole) { return xp_nan(); }
  let m = exp2(b * log2(ab));
  return select(m, -m, a < 0.0 && odd);
}""", "xp_base")
# fmod exactly (musl's fmodf, on the bits): Python's % and NumPy's floor division and remainder are built on it
_helper("xp_fmod", """
fn xp_fmod(x: f32, y: f32) -> f32 {
  var ux = bitcast<u32>(x);
  var uy = bitcast<u32>(y);
  var ex = i32((ux >> 23u) & 0xffu);
  var ey = i32((uy >> 23u) & 0xffu);
  let sx = ux & 0x80000000u;
  if ((uy << 1u) == 0u || xp_isnan(y) || ex == 255) { return xp_nan(); }
  if ((ux << 1u) <= (uy << 1u)) {
    if ((ux << 1u) == (uy << 1u)) { return bitcast<f32>(sx); }
    return x;
  }
  if (ex == 0) {
    var i = ux << 9u;
    loop { if ((i >> 31u) != 0u) { break; } ex -= 1; i <<= 1u; }
    ux <<= u32(-ex + 1);
  } else { ux = (ux & 0x007fffffu) | 0x00800000u; }
  if (ey == 0) {
    var i = uy << 9u;
    loop { if ((i >> 31u) != 0u) { break; } ey -= 1; i <<= 1u; }
    uy <<= u32(-ey + 1);
  } else { uy = (uy & 0x007fffffu) | 0x00800000u; }
  loop {
    if (ex <= ey) { break; }
    let i = ux - uy;
    if ((i >> 31u) == 0u) { if (i == 0u) { return bitcast<f32>(sx); } ux = i; }
    ux <<= 1u;
    ex -= 1;
  }
  let i = ux - uy;
  if ((i >> 31u) == 0u) { if (i == 0u) { return bitcast<f32>(sx); } ux = i; }
  loop { if ((ux >> 23u) != 0u) { break; } ux <<= 1u; ex -= 1; }
  if (ex > 0) { ux = (ux - 0x00800000u) | (u32(ex) << 23u); } else { ux >>= u32(-ex + 1); }
  return bitcast<f32>(ux | sx);
}""", "xp_base")
_helper("xp_divmod", """
fn xp_floordiv(a: f32, b: f32) -> f32 {
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  if (!xp_isfinite(a) || !xp_isfinite(b) || xp_iszero(b)) { return floor(xp_div(a, b)); }
  var m = xp_fmod(a, b);
  var d = xp_div(a - m, b);
  if (!xp_iszero(m) && ((b < 0.0) != (m < 0.0))) { d -= 1.0; }
  if (xp_iszero(d)) { return xp_copysign(0.0, xp_div(a, b)); }
  var f = floor(d);
  if (d - f > 0.5) { f += 1.0; }
  return f;
}
fn xp_remainder(a: f32, b: f32) -> f32 {
  if (xp_isnan(a) || xp_isnan(b) || xp_isinf(a) || xp_iszero(b)) { return xp_nan(); }
  let m = xp_fmod(a, b);
  if (xp_iszero(m)) { return xp_copysign(0.0, b); }
  return select(m, m + b, (b < 0.0) != (m < 0.0));
}""", "xp_fmod", "xp_div")
_helper("xp_nextafter", """
fn xp_nextafter(a: f32, b: f32) -> f32 {
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  if (a == b) { return b; }
  if (xp_iszero(a)) { return bitcast<f32>(1u | (bitcast<u32>(b) & 0x80000000u)); }
  let up = (a < b) == (a > 0.0);
  return bitcast<f32>(select(bitcast<u32>(a) - 1u, bitcast<u32>(a) + 1u, up));
}""", "xp_base")
# float16's steps are its own: the bits of an f16, which only a device with shader-f16 can see
_helper("xp_nextafter_h", """
fn xp_nextafter_h(a: f32, b: f32) -> f32 {
  if (xp_isnan(a) || xp_isnan(b)) { return xp_nan(); }
  if (a == b) { return b; }
  var h = bitcast<u32>(vec2<f16>(f16(a), 0.0h)) & 0xffffu;
  if (xp_iszero(a)) { h = 1u | select(0u, 0x8000u, xp_signbit(b)); }
  else if ((a < b) == (a > 0.0)) { h += 1u; } else { h -= 1u; }
  return f32(bitcast<vec2<f16>>(h).x);
}""", "xp_base")
_helper("xp_minmax", """
// branch-free: a SIMD device (lavapipe, SwiftShader) runs both sides of a branch its lanes disagree on. The order is
// compared on the bits, not the floats: NVIDIA's driver turned select(b, a, a > b) into its max instruction, which
// answers +0 for (+0, -0) where NumPy answers b, and did so through a select of the bitcast bits as well (an H200).
// xp_after(a, b): a > b for non-NaN a, b, on keys whose signed order is the floats' (-0 below +0, equal as floats).
fn xp_after(a: f32, b: f32) -> bool {
  let ia = bitcast<i32>(a);
  let ib = bitcast<i32>(b);
  let both_zero = ((bitcast<u32>(a) | bitcast<u32>(b)) << 1u) == 0u;
  return (ia ^ ((ia >> 31u) & 0x7fffffff)) > (ib ^ ((ib >> 31u) & 0x7fffffff)) && !both_zero;
}
fn xp_maximum(a: f32, b: f32) -> f32 {
  return select(select(b, a, xp_after(a, b)), xp_nan(), xp_isnan(a) || xp_isnan(b));
}
fn xp_minimum(a: f32, b: f32) -> f32 {
  return select(select(b, a, xp_after(b, a)), xp_nan(), xp_isnan(a) || xp_isnan(b));
}
""", "xp_base")
_helper("xp_sign", """
fn xp_sign(x: f32) -> f32 {
  if (xp_isnan(x)) { return x; }
  if (xp_iszero(x)) { return 0.0; }
  return select(1.0, -1.0, x < 0.0);
}""", "xp_base")
# integers: floor division and remainder as Python's (and NumPy's), 0 for a zero divisor; powers by squaring.
# The truncated remainder is a - (a / b) * b, never naga's i32 %: NVIDIA's Vulkan driver (an H100 and an H200) took it
# as an unsigned remainder (-1 % 3 read 0, 5 % -3 read 5) while its i32 division was right.
_helper("xp_idivmod", """
fn xp_ifloordiv(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  if (b == -1) { return 0 - a; }
  let q = a / b;
  return select(q, q - 1, (a - q * b != 0) && ((a < 0) != (b < 0)));
}
fn xp_iremainder(a: i32, b: i32) -> i32 {
  if (b == 0 || b == -1) { return 0; }
  let r = a - (a / b) * b;
  return select(r, r + b, r != 0 && ((r < 0) != (b < 0)));
}
fn xp_ufloordiv(a: u32, b: u32) -> u32 { if (b == 0u) { return 0u; } return a / b; }
fn xp_uremainder(a: u32, b: u32) -> u32 { if (b == 0u) { return 0u; } return a % b; }
fn xp_ipow(a: i32, b: i32) -> i32 {
  if (b < 0) { return select(0, select(1, select(1, -1, (b & 1) == 1), a == -1), a == 1 || a == -1); }
  var r = 1; var base = a; var e = b;
  loop { if (e == 0) { break; } if ((e & 1) == 1) { r = r * base; } base = base * base; e = e >> 1u; }
  return r;
}
fn xp_upow(a: u32, b: u32) -> u32 {
  var r = 1u; var base = a; var e = b;
  loop { if (e == 0u) { break; } if ((e & 1u) == 1u) { r = r * base; } base = base * base; e = e >> 1u; }
  return r;
}""")


# -- the NumPy twins' departures from NumPy ------------------------------------------------------------------------

def _np_floor_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.floor_divide(a, b)
    if out.dtype.kind == "f":   # infinities and zero divisors: floor(a / b), as the standard prefers
        odd = ~np.isfinite(a) | ~np.isfinite(b) | (b == 0)
        out = np.where(odd & ~np.isnan(a) & ~np.isnan(b), np.floor(np.true_divide(a, b)), out)
    return out


def _np_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind == "i":   # NumPy refuses negative powers of integers; the device
        neg = b < 0                                     # gives what truncating 1 / a**|b| gives
        safe = np.power(a, np.where(neg, 0, b))
        unit = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 1, -1, 1), 0))
        return np.where(neg, unit, safe).astype(a.dtype)
    return np.power(a, b)


def _np_sign(x: np.ndarray) -> np.ndarray:
    return np.where(x == 0, np.zeros((), x.dtype), np.sign(x)) if x.dtype.kind == "f" else np.sign(x)


# -- the table ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpDef:
    """One element-wise function: WGSL per kind (the helpers a template calls are found in it), its NumPy twin."""

    name: str
    wgsl: dict[str, str]
    host: Callable[..., np.ndarray]
    widen: bool = False    # float16 computes it in f32 (the helpers are f32)
    wraps: bool = False    # an 8- or 16-bit integer result wraps back into range
    arity: int = 1
    kind_arg: int = 0      # the argument whose dtype picks the template (where's: its first value, not the condition)


TABLE: dict[str, OpDef] = {}


def _op(name: str, wgsl: dict[str, str], host: Callable[..., np.ndarray], widen: bool = False,
        wraps: bool = False, arity: int = 1, kind_arg: int = 0) -> None:
    TABLE[name] = OpDef(name, wgsl, host, widen, wraps, arity, kind_arg)


def _f(name: str, host: Callable[..., np.ndarray], template: str | None = None) -> None:
    """A float function computed by an f32 helper (float16 through f32)."""
    _op(name, {"f": template or f"xp_{name}({{0}})"}, host, widen=True)


_INT = {"i": "({0} {op} {1})", "u": "({0} {op} {1})"}
_NUM = {**_INT, "f": "({0} {op} {1})"}


def _arith(name: str, op: str, host: Callable[..., np.ndarray], kinds: dict[str, str]) -> None:
    _op(name, {k: t.replace("{op}", op) for k, t in kinds.items()}, host, wraps=True, arity=2)


_arith("add", "+", np.add, _NUM)
_arith("subtract", "-", np.subtract, _NUM)
_arith("multiply", "*", np.multiply, _NUM)
_op("divide", {"f": "xp_div({0}, {1})"}, np.true_divide, widen=True, arity=2)
_op("floor_divide", {"i": "xp_ifloordiv({0}, {1})", "u": "xp_ufloordiv({0}, {1})", "f": "xp_floordiv({0}, {1})"},
    _np_floor_divide, widen=True, wraps=True, arity=2)
_op("remainder", {"i": "xp_iremainder({0}, {1})", "u": "xp_uremainder({0}, {1})", "f": "xp_remainder({0}, {1})"},
    np.remainder, widen=True, wraps=True, arity=2)
_op("pow", {"i": "xp_ipow({0}, {1})", "u": "xp_upow({0}, {1})", "f": "xp_pow({0}, {1})"}, _np_pow,
    widen=True, wraps=True, arity=2)
_op("negative", {"i": "(-{0})", "u": "(0u - {0})", "f": "(-{0})"}, np.negative, wraps=True)
_op("positive", {"i": "{0}", "u": "{0}", "f": "{0}"}, np.positive)
_op("abs", {"i": "abs({0})", "u": "{0}", "f": "abs({0})"}, np.abs, wraps=True)
_op("square", {"i": "({0} * {0})", "u": "({0} * {0})", "f": "({0} * {0})"}, np.square, wraps=True)
_op("sign", {"i": "select(select(0, 1, {0} > 0), -1, {0} < 0)", "u": "select(0u, 1u, {0} > 0u)",
             "f": "xp_sign({0})"}, _np_sign, widen=True)
_op("maximum", {"i": "max({0}, {1})", "u": "max({0}, {1})", "f": "xp_maximum({0}, {1})"}, np.maximum,
    widen=True, arity=2)
_op("minimum", {"i": "min({0}, {1})", "u": "min({0}, {1})", "f": "xp_minimum({0}, {1})"}, np.minimum,
    widen=True, arity=2)
_op("clip", {"i": "min(max({0}, {1}), {2})", "u": "min(max({0}, {1}), {2})",
             "f": "xp_minimum(xp_maximum({0}, {1}), {2})"},
    lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), widen=True, arity=3)
for _name in ("ceil", "floor", "trunc", "round"):
    _op(_name, {"i": "{0}", "u": "{0}", "f": f"{_name}({{0}})"}, getattr(np, _name))
_f("exp", np.exp)
_f("expm1", np.expm1)
_f("log", np.log, "xp_logk({0}, 0.6931471805599453)")
_f("log2", np.log2, "xp_logk({0}, 1.0)")
_f("log10", np.log10, "xp_logk({0}, 0.3010299956639812)")
_f("log1p", np.log1p)
_f("sqrt", np.sqrt)
for _name, _np_name in (("sin", "sin"), ("cos", "cos"), ("tan", "tan"), ("asin", "arcsin"), ("acos", "arccos"),
                        ("atan", "arctan")):
    _f(_name, getattr(np, _np_name))
for _name, _np_name in (("sinh", "sinh"), ("cosh", "cosh"), ("tanh", "tanh"), ("asinh", "arcsinh"),
                        ("acosh", "arccosh"), ("atanh", "arctanh")):
    _f(_name, getattr(np, _np_name))
_op("atan2", {"f": "xp_atan2({0}, {1})"}, np.arctan2, widen=True, arity=2)
_op("hypot", {"f": "xp_hypot({0}, {1})"}, np.hypot, widen=True, arity=2)
_op("logaddexp", {"f": "xp_logaddexp({0}, {1})"}, np.logaddexp, widen=True, arity=2)
_op("copysign", {"f": "xp_copysign({0}, {1})"}, np.copysign, widen=True, arity=2)
_op("nextafter", {"f": "xp_nextafter({0}, {1})", "h": "xp_nextafter_h({0}, {1})"}, np.nextafter,
    widen=True, arity=2)
_op("reciprocal", {"f": "xp_div(1.0, {0})"}, np.reciprocal, widen=True)
_op("isnan", {"b": "false", "i": "false", "u": "false", "f": "xp_isnan({0})"}, np.isnan, widen=True)
_op("isinf", {"b": "false", "i": "false", "u": "false", "f": "xp_isinf({0})"}, np.isinf, widen=True)
_op("isfinite", {"b": "true", "i": "true", "u": "true", "f": "xp_isfinite({0})"}, np.isfinite,
    widen=True)
_op("signbit", {"f": "xp_signbit({0})"}, np.signbit, widen=True)
_op("equal", {k: "({0} == {1})" for k in "biuf"}, np.equal, arity=2)
# float != as the negation of ==: naga emits an ordered not-equal, false for NaN (NaN != NaN is true)
_op("not_equal", {"b": "({0} != {1})", "i": "({0} != {1})", "u": "({0} != {1})", "f": "(!({0} == {1}))"},
    np.not_equal, arity=2)
for _name, _sym in (("less", "<"), ("less_equal", "<="), ("greater", ">"), ("greater_equal", ">=")):
    _op(_name, {k: f"({{0}} {_sym} {{1}})" for k in "iuf"}, getattr(np, _name), arity=2)
for _name, _sym in (("logical_and", "&&"), ("logical_or", "||"), ("logical_xor", "!=")):
    _op(_name, {"b": f"({{0}} {_sym} {{1}})"}, getattr(np, _name), arity=2)
_op("logical_not", {"b": "(!{0})"}, np.logical_not)
for _name, _sym, _np_name in (("bitwise_and", "&", "bitwise_and"), ("bitwise_or", "|", "bitwise_or"),
                              ("bitwise_xor", "^", "bitwise_xor")):
    _op(_name, {"b": f"({{0}} {'&&' if _sym == '&' else '||' if _sym == '|' else '!='} {{1}})",
                "i": f"({{0}} {_sym} {{1}})", "u": f"({{0}} {_sym} {{1}})"}, getattr(np, _np_name), arity=2)
_op("bitwise_invert", {"b": "(!{0})", "i": "(~{0})", "u": "(~{0})"}, np.invert, wraps=True)
# shifts as NumPy's: a shift by the width or more (or by a negative amount) gives 0, or the sign for >> of a signed
_op("bitwise_left_shift", {"i": "select(0, {0} << u32({1}), u32({1}) < {bits}u)",
                           "u": "select(0u, {0} << {1}, {1} < {bits}u)"}, np.left_shift, wraps=True, arity=2)
_op("bitwise_right_shift", {"i": "select({0} >> 31u, {0} >> u32({1}), u32({1}) < {bits}u)",
                            "u": "select(0u, {0} >> {1}, {1} < {bits}u)"}, np.right_shift, arity=2)
# the standard's real-valued array: conj, real and imag are the identity, the identity and zeros
_op("conj", {k: "{0}" for k in "biuf"}, np.conj)
_op("real", {k: "{0}" for k in "biuf"}, np.real)
_op("imag", {"f": "0.0"}, np.imag)
# where(c, a, b) and the masks of tril/triu: select
_op("where", {k: "select({2}, {1}, {0})" for k in "biuf"}, lambda c, a, b: np.where(c, a, b), arity=3, kind_arg=1)
