"""Pyodide's memory snapshot (web/snapshot.js). The dev server lists the site's (py/gpuport/site/pyodide_snapshot.py):
even a first visit boots from it, with this page's random state, locale and time zone, and makes none of its own;
one altered in transit fails its SHA-256 check and is not booted from. The site's is kept in the browser for the
next visits, named by its SHA-256 and the check of its bytes; a kept copy altered on disk fails that check, is
deleted and fetched again. Where the site's cannot serve, a first visit boots as usual and makes one beside the
page; the next visit boots from it; a snapshot altered in IndexedDB fails its check, is dropped, never used, and
made again. In Chromium and Firefox, with Pyodide in its Web Worker unless said."""

from __future__ import annotations

import re
import urllib.request

import pytest
from playwright.sync_api import Error as PlaywrightError

from gpuport.testing.pages import call_page, evaluate_within

KEY = "async () => 'pyodide-snapshot:' + new URL('pyodide/', location.href).href"
CORRUPT = """async (key) => {
  const db = await new Promise((ok, no) => { const r = indexedDB.open("gpuport"); r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  const tx = db.transaction("meta", "readwrite");
  const store = tx.objectStore("meta");
  const record = await new Promise((ok) => { const q = store.get(key); q.onsuccess = () => ok(q.result); });
  record.bytes[record.bytes.length >> 1] ^= 0xff;
  store.put(record, key);
  await new Promise((ok) => { tx.oncomplete = ok; });
  return record.bytes.length;
}"""
STORED = """async (key) => {
  const db = await new Promise((ok, no) => { const r = indexedDB.open("gpuport"); r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  if (!db.objectStoreNames.contains("meta")) return false;
  const store = db.transaction("meta").objectStore("meta");
  return await new Promise((ok) => { const q = store.get(key); q.onsuccess = () => ok(q.result !== undefined); });
}"""
SITES = "**/wheels/pyodide-snapshot-*.bin"
KEPT = "restored from the site's copy kept in this browser"
# the site's snapshot file as kept in the origin private file system: {name: size}, and one byte of it altered
KEPT_FILES = """async () => {
  const root = await navigator.storage.getDirectory();
  const folder = await root.getDirectoryHandle("gpuport-snapshots");
  const out = {};
  for await (const [name, handle] of folder.entries()) out[name] = (await handle.getFile()).size;
  return out;
}"""
ALTER_KEPT = """async (name) => {
  const folder = await (await navigator.storage.getDirectory()).getDirectoryHandle("gpuport-snapshots");
  const handle = await folder.getFileHandle(name);
  const bytes = new Uint8Array(await (await handle.getFile()).arrayBuffer());
  bytes[bytes.length >> 1] ^= 0xff;
  const writable = await handle.createWritable();
  await writable.write(bytes);
  await writable.close();
}"""
# another tab of the site holding the kept file open through a worker's synchronous access handle (exclusive)
HOLD_KEPT = """async (name) => {
  const source = `onmessage = async ({ data }) => {
    if (data === null) { self.held.close(); postMessage("released"); return; }
    try {
      const folder = await (await navigator.storage.getDirectory()).getDirectoryHandle("gpuport-snapshots");
      self.held = await (await folder.getFileHandle(data)).createSyncAccessHandle();
      postMessage("held");
    } catch (e) { postMessage(String(e)); }
  };`;
  const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
  window.holder = worker;
  return await new Promise((ok) => { worker.onmessage = ({ data }) => ok(data); worker.postMessage(name); });
}"""
# the holder lets go before its tab closes: a closing tab ends its worker, and with it the lock, only some time later
# (a write just after the close once failed with NoModificationAllowedError)
RELEASE_KEPT = """async () => {
  window.holder.postMessage(null);
  return await new Promise((ok) => { window.holder.onmessage = ({ data }) => ok(data); });
}"""
DRAW = "import os, random, time\n[random.random(), os.environ[\"LANG\"], time.timezone, list(time.tzname)]"
# the page's own: what a boot in this page would give
ZONE = """() => { const y = new Date().getFullYear(); const w = new Date(y, 0, 1), s = new Date(y, 6, 1);
  const name = (d) => d.toLocaleTimeString(undefined, {hour12: false, timeZoneName: "short"}).split(" ")[1];
  return [Math.max(w.getTimezoneOffset(), s.getTimezoneOffset()) * 60, [name(w), name(s)]]; }"""
WORKS = """
import numpy as np
x = rt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
(await rt.ops.scale(x, 2.0, 1.0).read()).tolist()
"""


def _within(page, script: str, arg=None, s: int = 60):
    """One of this module's storage scripts, held to `s` seconds: IndexedDB's open and the origin private file system
    wait for ever where another connection or handle holds them."""
    return evaluate_within(page, script, arg, s)


def _visit(page, made: bool = True) -> dict:
    """How the page booted, that it computes, and (`made`) how the snapshot the page makes or keeps went."""
    timings = call_page(page, "timings")
    result = call_page(page, "runPython", WORKS)
    assert result == [[1.0, 3.0, 5.0], [7.0, 9.0, 11.0]], result
    return {"booted": timings["snapshot"], "made": _snapshot_status(page) if made else None,
            "pyodide_ms": timings["pyodide_ms"]}


def _snapshot_status(page) -> str:
    """snapshotStatus(); one that never settles fails naming what each of the page's background tasks was doing (the
    snapshot waits for the calibration before it)."""
    try:
        return call_page(page, "snapshotStatus")
    except PlaywrightError as exc:
        unsettled = str(exc)
    tasks = call_page(page, "background", timeout_s=10)
    pytest.fail(f"{unsettled}; the page's background tasks then: {tasks}", pytrace=False)


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_a_first_visit_boots_from_the_sites_snapshot_which_is_kept_and_a_corrupt_copy_dropped(browsers, server_url,
                                                                                               kind):
    """A first visit boots from the site's snapshot, with this page's random state, locale and time zone (as a booted
    interpreter would), and makes none of its own. Once the page is idle the file is kept in the origin private file
    system under its SHA-256; the next visit reads it from there (its worker, through a synchronous access handle),
    and so does one while another tab holds that handle (through a File, or the site's is fetched: never deleted); a
    kept copy altered on disk fails its check, is deleted, never booted from, and the site's is fetched and kept
    again."""
    # a fresh profile, in another time zone and language than the machine that made the snapshot
    context = browsers.get(kind).new_context(timezone_id="America/New_York", locale="fr-FR")
    try:
        page = context.new_page()
        page.goto(server_url + "/test.html?calibrate=idle")
        sha256 = page.evaluate("async () => (await (await fetch('wheels/latest.json')).json()).snapshot.sha256")
        first = _visit(page)
        assert (first["booted"], first["made"]) == ("restored from the site",
                                                    "restored from the site; kept for the next visit"), first
        draw = call_page(page, "runPython", DRAW)
        assert draw[2:] == page.evaluate(ZONE) and draw[2] == 18000, draw
        booted = context.new_page()
        booted.goto(server_url + "/test.html?calibrate=idle&snapshot=0")
        assert _visit(booted)["booted"] == "off"
        assert call_page(booted, "runPython", DRAW)[1:] == draw[1:], "a restored interpreter differs from a booted one"
        booted.close()
        call_page(page, "calibrationStatus")   # what an idle page does
        assert not _within(page, STORED, page.evaluate(KEY)), "a snapshot of its own was made"
        kept = _within(page, KEPT_FILES)
        # named by its SHA-256 and the check of its bytes (web/idb.js checkOf), which the next visits compute instead
        [name] = kept
        assert re.fullmatch(f"{sha256}\\.[0-9a-f]{{16}}\\.bin", name) and kept[name] > 1 << 20, kept
        check = name.split(".")[1]

        page.reload()
        second = _visit(page)
        assert second["booted"] == second["made"] == KEPT, second
        again = call_page(page, "runPython", DRAW)
        assert again[0] != draw[0], "two visits drew the same random numbers: the snapshot's state"

        # the kept copy held open by another tab: this visit reads it through a File or, where the lock forbids
        # that, fetches the site's; either way it boots, says which, and leaves the copy in place
        holder = context.new_page()
        holder.goto(server_url + "/no-such-page")   # any document of the site's origin
        assert _within(holder, HOLD_KEPT, name) == "held"
        page.reload()
        locked = _visit(page)
        assert locked["booted"] == KEPT or locked["booted"].startswith(
            "restored from the site (the kept copy could not be read ("), locked
        assert _within(holder, RELEASE_KEPT) == "released"
        holder.close()
        assert _within(page, KEPT_FILES) == kept

        _within(page, ALTER_KEPT, name)
        page.reload()
        third = _visit(page)
        dropped = "restored from the site (the kept copy's check is "
        assert third["booted"].startswith(dropped), third
        assert third["booted"].endswith(f", not the {check} it was kept with)"), third
        # kept again as on the first visit (whose kept copy the second visit booted from): the same name and size
        assert third["made"] == third["booted"] + "; kept for the next visit", third
        assert _within(page, KEPT_FILES) == kept
        print(f"\n{kind}: Pyodide stage {first['pyodide_ms']:.0f} ms on a first visit, from the site's snapshot")
    finally:
        context.close()


def test_a_sites_snapshot_altered_in_transit_is_not_booted_from(browsers, server_url):
    """With Pyodide on the page's thread, whose requests the test can alter."""
    context = browsers.get("chromium-webgpu").new_context()   # a fresh profile

    def altered(route):   # the file read here, not through the browser (route.fetch: 24 MB through Playwright twice)
        with urllib.request.urlopen(route.request.url) as answer:
            body = bytearray(answer.read())
        body[len(body) // 2] ^= 0xFF
        route.fulfill(status=200, body=bytes(body), headers={"content-type": "application/octet-stream"})

    try:
        context.route(SITES, altered)
        page = context.new_page()
        page.goto(server_url + "/test.html?worker=0&calibrate=idle")
        first = _visit(page, made=False)   # the making and the own copy's precedence: the test below
        assert first["booted"].startswith("dropped: the site's: ") and "its sha256 is" in first["booted"], first
        assert first["booted"].endswith("; making one"), first
    finally:
        context.close()


# a call of 3 s that leaves the calibration after it a device that never answers, and 0.5 s to wait for one
NEVER_ANSWERING_CALIBRATION = """
import asyncio
from gpuport.placement import calibration
async def _never(rt):
    await asyncio.Future()
calibration._measure_device, calibration.CALIBRATE_WAIT_S = _never, 0.5
await asyncio.sleep(3)
7
"""


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_a_page_makes_its_own_snapshot_once_idle_the_next_visit_boots_from_it_and_a_corrupt_one_is_dropped(
        browsers, server_url, kind):
    """Where the site's snapshot cannot serve (here: not found), the page makes its own, which boots a second
    interpreter: while a call runs (a first result on a first visit) it waits, and so does the calibration before it
    (their states, background(), checked in Chromium, where the calibration then gets no answer from the device and is
    ended at its deadline, the snapshot made all the same); the next visit boots from it, before the site's (there
    again); one altered in IndexedDB fails its check, is dropped, never used, and one is made again."""
    context = browsers.get(kind).new_context()   # a fresh profile
    try:
        context.route(SITES, lambda route: route.fulfill(status=404, body="not here"))
        page = context.new_page()
        page.goto(server_url + "/test.html?calibrate=idle")
        key = page.evaluate(KEY)
        if kind == "chromium-webgpu":
            _within(page, "async (src) => { const g = await window.gpuportReady; window.busy = g.runPython(src); }",
                    NEVER_ANSWERING_CALIBRATION, s=300)
            # 2.5 s is IDLE_MS five times over: a chain that did not wait would be measuring by now (the calibration
            # comes first) or past it
            page.wait_for_timeout(2500)
            waiting = call_page(page, "background")
            assert waiting == {"calibration": "waiting for an idle page", "precompile": "not in the background",
                               "snapshot": "waiting for an idle page"}, waiting
            assert not _within(page, STORED, key), "the snapshot was made while a call ran"
            assert _within(page, "async () => await window.busy") == 7
            assert call_page(page, "calibrationStatus") == ("not measured: NoAnswer: the device's calibration (its "
                                                            "dispatches and reads): no answer in 0.5 s")
        first = _visit(page)
        assert first["booted"].startswith("dropped: the site's: HTTP 404 for "), first
        assert first["booted"].endswith("; making one") and first["made"].startswith("made ("), first
        assert _within(page, STORED, key)

        context.unroute(SITES)   # the site's is there again: the page's own, stored, comes first
        page.reload()
        second = _visit(page)
        assert second["booted"] == "restored" and second["made"] == "restored", second
        context.route(SITES, lambda route: route.fulfill(status=404, body="not here"))

        nbytes = _within(page, CORRUPT, key)
        assert nbytes > 1 << 20
        page.reload()
        # the altered snapshot was not booted from: dropped, and another one is being made (as the first was)
        third = _visit(page, made=False)
        assert third["booted"].startswith("dropped: its check is ") and third["booted"].endswith("; making one"), third
        assert "the site's: HTTP 404" in third["booted"], third   # the site's is tried once the stored one is dropped
        print(f"\n{kind}: Pyodide stage {first['pyodide_ms']:.0f} ms booted, {second['pyodide_ms']:.0f} ms restored;"
              f" {first['made']}")   # a worker ended for stalling shows here
    finally:
        context.close()


# Stand-ins for snapshot-worker.js: one that names a stage and then says nothing; one that does so on its first start
# only (a count in IndexedDB) and answers on the next; one that fails
STALLING = """async () => {
  const snapshots = await import("/snapshot.js");
  const worker = (source) => URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const silent = worker("self.onmessage = () => self.postMessage({ stage: 'booting Pyodide' });");
  const once = worker(`self.onmessage = async () => {
    self.postMessage({ stage: "booting Pyodide" });
    const db = await new Promise((ok) => { const r = indexedDB.open("stalling");
      r.onupgradeneeded = () => r.result.createObjectStore("n"); r.onsuccess = () => ok(r.result); });
    const tx = db.transaction("n", "readwrite");
    const q = tx.objectStore("n").get("n");
    q.onsuccess = () => tx.objectStore("n").put((q.result || 0) + 1, "n");
    tx.oncomplete = () => { if (q.result) self.postMessage({ ok: true, bytes: 7 }); };
  };`);
  const failing = worker("self.onmessage = () => self.postMessage({ ok: false, error: 'out of memory' });");
  const outcome = (workerURL) => snapshots.makeInBackground("/pyodide/", { workerURL, stallS: 0.5 })
    .then((made) => made, (e) => `rejected: ${e.message}`);
  return [await outcome(silent), await outcome(once), await outcome(failing), snapshots.STALL_S];
}"""


def test_a_snapshot_worker_that_stalls_is_ended_and_tried_once_more(chromium_webgpu, server_url):
    """A snapshot worker that says nothing for STALL_S after naming a stage is ended and a second one started; two
    stalls reject naming the stage (the page's snapshotStatus says "not made: ..."), where the page would otherwise
    wait for ever; an error is not retried."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + "/wheels/latest.json")   # any page of the site: no interpreter needed
        silent, once, failing, stall_s = _within(page, STALLING)
        stalled = 'the snapshot worker said nothing for 0.5 s after "booting Pyodide" and was ended'
        assert silent == f"rejected: {stalled}; before it, {stalled}", silent
        assert once == f"made (7 bytes; before it, {stalled})", once
        assert failing == "rejected: out of memory", failing
        assert stall_s == 60
    finally:
        page.close()
