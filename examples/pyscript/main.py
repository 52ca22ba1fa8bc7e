# The example's Python, run by index.html on the page's main thread and by worker.html in a worker: install
# gpuport from the served wheel, open a runtime, run your own WGSL kernel, read arrays back synchronously, embed
# sentences with MiniLM. The top-level awaits are PyScript's: it runs a script asynchronously unless told
# `async="false"` (run so, the synchronous reads could not wait for the GPU either).
import json
from urllib.parse import urljoin

import micropip
import numpy as np
from pyodide.http import pyfetch
from pyscript import RUNNING_IN_WORKER, document, window


def show(element_id, value):
    document.getElementById(element_id).textContent = value


try:
    # Against the page's URL: a PyScript worker runs from a blob: URL, against which "/wheels/..." does not parse.
    page = str(window.location.href)
    # the wheel the dev server built; any URL of a gpuport wheel works
    latest = await (await pyfetch(urljoin(page, "/wheels/latest.json"))).json()
    await micropip.install(urljoin(page, latest["gpuport"]))
    import gpuport as gp

    rt = await gp.open()
    info = rt.info()
    show("backend", json.dumps({"backend": info["backend"], "tier": info["tier"], "worker": RUNNING_IN_WORKER}))

    DOUBLE = """
    @group(0) @binding(0) var<storage, read> x: array<f32>;
    @group(0) @binding(1) var<storage, read_write> y: array<f32>;
    @compute @workgroup_size(64)
    fn main(@builtin(global_invocation_id) id: vec3<u32>) {
      if (id.x < arrayLength(&x)) { y[id.x] = 2.0 * x[id.x] + 1.0; }
    }
    """

    def double_ref(x, y, *, uniforms, workgroups):
        y[:] = 2 * x + 1   # the NumPy twin, for the cpu tier

    kernel = rt.kernel(DOUBLE, entry_point="main", reference=double_ref)
    x, y = rt.tensor(np.arange(100, dtype=np.float32)), rt.tensor(np.zeros(100, np.float32))
    kernel.dispatch((2, 1, 1), x, y)
    show("kernel", json.dumps((await y.read()).tolist()))

    # gpuport.xp, the array API standard on the GPU (pinned there: auto would pick NumPy on a software adapter).
    # float(), bool(), boolean indexing and unique_values read values back inside the call: the page waits for the
    # GPU there (WebAssembly JSPI, Chromium and Firefox); a browser without JSPI raises gp.SyncReadUnavailable, and
    # `await xp.read(x)` is the way.
    from gpuport import xp

    with rt.pinned("webgpu"):
        a = xp.asarray(np.arange(-4, 5, dtype=np.float32), device=rt)
        b = a * a - 4                                   # lazy: one fused kernel when something reads it
        show("arrays", json.dumps({"sum": float(xp.sum(b)), "any negative": bool(xp.any(b < 0)),
                                   "positive": np.asarray(b[b > 0]).tolist(),
                                   "distinct |a|": np.asarray(xp.unique_values(xp.abs(a))).tolist(),
                                   "ran on": sorted({side for name, sides in rt.info()["ran"].items()
                                                     if name.startswith("xp.") for side in sides})}))

    model = await gp.models.load("minilm-l6-v2", rt)
    emb = await model.embed(["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."])
    show("embeddings", json.dumps({"shape": list(emb.shape), "norms": np.linalg.norm(emb, axis=1).round(4).tolist(),
                                   "cosine": round(float(emb[0] @ emb[1]), 4)}))
    show("status", "Ready.")
except Exception as exc:   # shown on the page, where a test (or a person) reads it
    show("status", f"{type(exc).__name__}: {exc}")
    raise
