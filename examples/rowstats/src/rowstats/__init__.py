"""Row statistics on gpuport, written once for native Python and a web page (Pyodide).

`cosine_similarity` chains gpuport ops; `clamp` is this package's own WGSL kernel. Each has its NumPy
reference beside it. Everything is awaited: in a page, reading a result back is asynchronous.
"""

from __future__ import annotations

import numpy as np

CLAMP_WGSL = """
override WG: u32 = 64u;
struct Params { n: u32, lo: f32, hi: f32, _pad: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < p.n) { out[id.x] = clamp(x[id.x], p.lo, p.hi); }
}
"""
WG = 64


async def cosine_similarity(rt, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b`: an (len(a), len(b)) array."""
    ua = rt.ops.l2_normalize(rt.tensor(np.asarray(a, np.float32)))
    ub = rt.ops.l2_normalize(rt.tensor(np.asarray(b, np.float32)))
    return await rt.ops.matmul(ua, ub, transpose_b=True).read()


def cosine_similarity_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (ua @ ub.T).astype(np.float32)


async def clamp(rt, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """x clamped to [lo, hi] by this package's own WGSL kernel (NumPy where the runtime has no WebGPU)."""
    if rt.backend == "cpu":   # WGSL needs a GPU; the cpu tier (WebKit, backend="cpu") takes the reference
        return clamp_ref(x, lo, hi)
    x = np.ascontiguousarray(x, np.float32).ravel()
    out = rt.empty(x.size)
    kernel = rt.kernel(CLAMP_WGSL, entry_point="main", constants={"WG": WG})
    kernel.dispatch((x.size + WG - 1) // WG, rt.tensor(x), out, uniforms=[x.size, float(lo), float(hi)])
    return await out.read()


def clamp_ref(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32).ravel(), lo, hi)
