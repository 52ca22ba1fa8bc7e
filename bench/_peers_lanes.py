"""The systems bench/peers.py times and the interleaved schedule that times them.

A system answers `call(case, texts, embeddings) -> {"ms": float, "embeddings": list | None}`, timed where
it runs (in the worker process, in the page), so no driver round trip is counted:
- `NativeSystem`: a long-lived `bench/peers/worker.py` process (threads fixed by its environment);
- `TjsPage`: transformers.js in a page served by `PeerServer` (`bench/peers/index.html`, CLIP's `vision.html`);
- `GpuportPage`: gpuport's own page (the dev server) with the model loaded in Pyodide.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import statistics
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from _harness import read_line, serving

PEERS = Path(__file__).resolve().parent / "peers"


class SystemFailed(RuntimeError):
    """A system could not start or answer; the lane goes on without it and the JSON says why."""


class NativeSystem:
    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str], timeout_s: float = 600) -> None:
        self.name = name
        self.proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=PEERS.parent.parent, bufsize=1)
        self.timeout_s = timeout_s
        self.info = self._read()["info"]

    def _read(self) -> dict[str, Any]:
        line = read_line(self.proc, self.timeout_s)
        if not line:
            self.close()
            raise SystemFailed(f"{self.name}: the worker process gave no answer (exit code {self.proc.poll()})")
        return json.loads(line)

    def call(self, case: str, texts: list[str], embeddings: bool) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"texts": texts, "embeddings": embeddings}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"after": true}\n')
                self.proc.stdin.flush()
                self.info["after"] = self._read()["after"]
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired, SystemFailed):
                self.proc.kill()
                self.proc.wait()


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
                      ".onnx": "application/octet-stream"}
    mounts: dict[str, str] = {}
    cache_control = "no-store"

    def translate_path(self, path: str) -> str:
        p = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in self.mounts.items():
            if p.startswith(prefix):
                rel = os.path.normpath(p[len(prefix):]).lstrip("/")
                return "/nonexistent" if rel.startswith("..") else os.path.join(root, rel)
        return super().translate_path(path)

    def end_headers(self) -> None:
        # cross-origin isolation, so onnxruntime-web may use threads if it wants them (it picks 1 on 2 cores)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", self.cache_control)
        super().end_headers()

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


def _serve_static(port: int, directory: str, mounts: dict[str, str], cache_control: str) -> None:
    handler = type("Handler", (_Handler,), {"mounts": mounts, "cache_control": cache_control})
    http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=directory)).serve_forever()


@contextmanager
def peer_server(bench_dir: Path, cache_control: str = "no-store", extra: dict[str, str] | None = None) -> Iterator[str]:
    """The transformers.js page on a free loopback port: / is bench/peers, /node_modules/ and /models/ come
    from the bench set-up folder (`extra`: more prefix -> folder mounts). cache_control: what every response says
    (the steady-state bench wants nothing cached; the start-up bench wants what a plain static server gives,
    revalidation)."""
    mounts = {"/node_modules/": str(bench_dir / "js" / "node_modules"), "/models/": str(bench_dir / "models"),
              **(extra or {})}
    with serving(_serve_static, (str(PEERS), mounts, cache_control), "the transformers.js server") as url:
        yield url


def _offline(context: Any, origins: Sequence[str], blocked: list[str]) -> None:
    """Abort (and record) every request that leaves this machine's bench servers."""
    def route(r: Any) -> None:
        if r.request.url.startswith(tuple(origins)):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()
    context.route("**/*", route)


def _evaluate(page: Any, script: str, arg: Any, name: str) -> Any:
    try:
        return page.evaluate(script, arg)
    except Exception as exc:  # the page's own words, then the lane goes on without this system
        raise SystemFailed(f"{name}: {type(exc).__name__}: {str(exc)[:2000]}") from exc


class TjsPage:
    """transformers.js in a page on `device`; `threads` sets onnxruntime-web's wasm threads (None: its own
    choice, min(4, ceil(cores / 2)) in an isolated page: 1 on 2 cores). `page` is the peer's page (MiniLM's
    index.html, CLIP's vision.html) and `run` its function that runs a case."""

    def __init__(self, browser: Any, url: str, device: str, threads: int | None = None, *,
                 page: str = "index.html", run: str = "tjsEmbed") -> None:
        self.name = f"tjs-{device}" + (f"-{threads}t" if threads else "")
        self.blocked: list[str] = []
        self.run = run
        self.context = browser.new_context()
        _offline(self.context, [url + "/"], self.blocked)
        self.page = self.context.new_page()
        self.page.goto(f"{url}/{page}")
        self.page.wait_for_function("window.tjsReady === true", timeout=120_000)
        self.info = _evaluate(self.page, "([d, t]) => window.tjsLoad({device: d, threads: t})", [device, threads],
                              self.name)

    def call(self, case: str, texts: Any, embeddings: bool) -> dict[str, Any]:
        return _evaluate(self.page, f"([k, e]) => window.{self.run}(k, e)", [case, embeddings], self.name)

    def close(self) -> None:
        self.info["blocked_requests"] = self.blocked
        self.context.close()


GP_LOAD = """
import json, time
from gpuport import models
_bench_texts = json.loads({texts!r})
_t = time.perf_counter()
_bench_model = await models.load("minilm-l6-v2", rt)
{{"load_ms": (time.perf_counter() - _t) * 1000}}
"""
GP_CALL = """
from gpuport.host import hostops as _hostops
_t = time.perf_counter()
_e = await _bench_model.embed(_bench_texts[{case!r}])
_ms = (time.perf_counter() - _t) * 1000
{{"ms": _ms, "embeddings": _e.tolist() if {embeddings} else None,
  "stats": {{"pool": _hostops.layer_threads().get("last_call")}}}}
"""
GP_INFO = """
_i = rt.info()
{k: _i.get(k) for k in ("version", "backend", "tier", "adapter", "browser", "selection", "strategies", "note",
                         "host_threads")}
"""


class GpuportPage:
    """gpuport's page on `backend`; `threads` is start({threads}) (None: its default, every core where the page
    is cross-origin isolated). MiniLM on `texts` unless another model's Python is given: `load` (run once),
    `call_src` (a case, formatted with case and embeddings) and `info_src` (what the page says after)."""

    def __init__(self, browser: Any, url: str, backend: str, texts: dict[str, list[str]],
                 threads: int | None = None, *, load: str | None = None, call_src: str = GP_CALL,
                 info_src: str = GP_INFO) -> None:
        self.name = f"gpuport-{backend}" + (f"-{threads}-thread" if threads else "")
        self.blocked: list[str] = []
        self.call_src, self.info_src = call_src, info_src
        self.context = browser.new_context()
        _offline(self.context, [url + "/"], self.blocked)
        self.page = self.context.new_page()
        # auto is the page's defaults (its background precompilation included: it builds only what placement sent
        # to the device, once idle, paused while a call runs); a pinned backend gets precompile off, else the page
        # would build every manifest pipeline in the background while the cases run
        query = ("table=0" + ("" if backend == "auto" else f"&precompile=off&backend={backend}")
                 + (f"&threads={threads}" if threads else ""))
        self.page.goto(f"{url}/?{query}")
        self.info = self._run(GP_LOAD.format(texts=json.dumps(texts)) if load is None else load)

    def _run(self, src: str) -> Any:
        return _evaluate(self.page, "async (src) => (await window.gpuportReady).runPython(src)", src, self.name)

    def call(self, case: str, texts: Any, embeddings: bool) -> dict[str, Any]:
        return self._run(self.call_src.format(case=case, embeddings=embeddings))

    def close(self) -> None:
        try:
            self.info["after"] = self._run(self.info_src)
        except SystemFailed as exc:
            self.info["after"] = str(exc)
        self.info["blocked_requests"] = self.blocked
        self.context.close()


def interleave(systems: Sequence[Any], texts: dict[str, list[str]], reps: int, min_reps: int, budget_s: float,
               log: Callable[[str], None] = print, gap_s: float = 0.0, warmups: int = 1) -> tuple[dict, dict, dict]:
    """Time every system on every case, alternating systems within each repetition (the starting system
    rotates), after `warmups` discarded rounds over every case. A system stops early in a case once it has `min_reps`
    repetitions and has spent `budget_s` there. A failing system is dropped for the rest of the lane.
    `gap_s` of idle time before each call lets the previous system's spinning threads (OpenMP, OpenBLAS
    busy-wait after a call) go to sleep, so they do not take a core from the next one.

    The warm-up rounds run every case before any is timed: a browser compiles a WebAssembly function again with its
    optimising compiler once it is hot, on background threads that take a core from the next calls. With one warm-up
    call per case, the first case timed (one sentence) had every system still tiering up: its first 7 timed calls
    took 15.6 / 18.4 / 12.2 ms (transformers.js at 1 and 2 threads, gpuport) where the next 14 took 13.3 / 13.7 / 9.0
    (Chromium, one run of 21), while the later cases, their code hot by then, showed no such drift.

    Returns ({case: {system: {"warmup_ms", "runs_ms"}}}, {case: {system: warm-up embeddings}}, {system: error}):
    warmup_ms and the embeddings are each system's first call of the case.
    """
    results: dict[str, dict[str, dict[str, Any]]] = {case: {} for case in texts}
    embeddings: dict[str, dict[str, list]] = {case: {} for case in texts}
    errors: dict[str, str] = {}
    live = list(systems)

    def call(s: Any, case: str, emb: bool) -> dict[str, Any] | None:
        time.sleep(gap_s)
        try:
            return s.call(case, texts[case], emb)
        except SystemFailed as exc:
            errors[s.name] = str(exc)
            live.remove(s)
            log(f"  {s.name} dropped: {exc}")
            return None

    for round_ in range(max(1, warmups)):
        for case in texts:
            for s in list(live):
                out = call(s, case, round_ == 0)
                if out is not None and round_ == 0:
                    results[case][s.name] = {"warmup_ms": out["ms"], "runs_ms": []}
                    embeddings[case][s.name] = out["embeddings"]
    for case in texts:
        spent = {s.name: 0.0 for s in live}
        for r in range(reps):
            k = r % max(1, len(live))
            for s in live[k:] + live[:k]:
                if r >= min_reps and spent[s.name] >= budget_s * 1000:
                    continue
                out = call(s, case, False)
                if out is not None:
                    results[case][s.name]["runs_ms"].append(out["ms"])
                    if "stats" in out:   # a system's own account of the call (its stages, where each ran)
                        results[case][s.name].setdefault("stats", []).append(out["stats"])
                    spent[s.name] += out["ms"]
        log(f"  {case}: " + ", ".join(f"{n} {statistics.median(v['runs_ms']):.1f}"
                                      for n, v in results[case].items() if v["runs_ms"]))
    return results, embeddings, errors


def cpu_jiffies(root_pid: int) -> dict[str, int]:
    """Busy and steal jiffies of the machine and the CPU time of `root_pid`'s process tree, to tell how much
    of a lane's wall time other processes took."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    kids: dict[int, list[int]] = {}
    own: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(f[1]), []).append(int(d))
        own[int(d)] = sum(int(x) for x in f[11:15])
    mine, todo = 0, [root_pid]
    while todo:
        p = todo.pop()
        mine += own.get(p, 0)
        todo += kids.get(p, [])
    return {"busy": sum(fields) - fields[3] - fields[4], "steal": fields[7], "mine": mine}


def contention(a: dict[str, int], b: dict[str, int], wall_s: float) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    foreign = ((b["busy"] - a["busy"]) - (b["steal"] - a["steal"]) - (b["mine"] - a["mine"])) / hz
    return {"wall_s": round(wall_s, 1), "foreign_cpu_s": round(foreign, 1),
            "steal_s": round((b["steal"] - a["steal"]) / hz, 1), "bench_cpu_s": round((b["mine"] - a["mine"]) / hz, 1)}
