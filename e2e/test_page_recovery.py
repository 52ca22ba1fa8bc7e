"""Recovery in Chromium: GPUDevice.destroy() (the bridge's loseDevice hook) in the middle of a workload is
recovered: correct results, and the statistics show exactly one device-loss recovery. Also: the demo page
shows the compatibility report."""

from __future__ import annotations

from gpuport.testing.pages import call_page

WORKLOAD = """
import numpy as np, gpuport
wrt = await gpuport.open(backend="webgpu")
try:
    r = np.random.default_rng(5)
    x = r.standard_normal((40, 64)).astype(np.float32)
    w = r.standard_normal((64, 48)).astype(np.float32)
    tx, tw = wrt.tensor(x), wrt.tensor(w)
    h = wrt.ops.gelu(wrt.ops.matmul(tx, tw))
    before = await h.read()
    pending = wrt.ops.scale(h, 2.0, 1.0)          # queued before the loss
    wrt.device.destroy_for_test()                # bridge.loseDevice -> GPUDevice.destroy()
    after = wrt.ops.add(pending, h)               # issued after it
    got = await after.read()
    from gpuport.host import references as K
    hr = K.gelu_ref(x @ w)
    want = hr * 2 + 1 + hr
    result = {"err_before": float(np.abs(before - hr).max()), "err_after": float(np.abs(got - want).max()),
              "stats": {k: v for k, v in wrt.recovery.stats().items() if k != "events"},
              "backend": wrt.backend}
finally:
    wrt.close()
result
"""


def _run(page, src):
    return call_page(page, "runPython", src)


def test_device_destroy_mid_workload_is_recovered_in_chromium(chromium_webgpu, server_url):
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + "/?table=0&precompile=off")
        out = _run(page, WORKLOAD)
        assert out["backend"] == "webgpu", out
        st = out["stats"]
        assert st["device_losses"] == 1 and st["recoveries"] == 1 and st["failed_recoveries"] == 0, st
        assert out["err_before"] < 1e-3 and out["err_after"] < 1e-3, out
        assert st["restored_tensors"] >= 2, st
    finally:
        page.close()


def test_demo_page_shows_the_report(chromium_webgpu, server_url):
    from playwright.sync_api import expect

    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + "/?table=0&precompile=off")
        expect(page.locator("#doctor")).to_contain_text("# gpuport doctor", timeout=180_000)
        text = page.locator("#doctor").text_content()
        assert "| matmul |" in text and "## Problems" in text, text[:500]
    finally:
        page.close()
