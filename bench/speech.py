"""Whisper tiny.en speech to text natively: gpuport against faster-whisper (CTranslate2, float32) in one run, interleaved.

Systems, each a long-lived worker process (this file with --worker) whose thread count is fixed by its environment
(OMP/OPENBLAS/MKL/LP_NUM_THREADS = T) before anything is imported:
- faster-whisper 1.2.1: `WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=T)`,
  `transcribe(pcm, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
  condition_on_previous_text=False)` with its segments consumed: the baseline;
- gpuport `cpu` (NumPy + the native C SIMD host kernels) and gpuport `auto` (wgpu-py's adapter, lavapipe here, with
  each op placed on it or on the host by auto's selector): `models.load("whisper-tiny.en", rt)`, `transcribe(pcm)`;
at T = 1 and 2 threads (--threads). gpuport's host threads are the BLAS's budget (hostops.blas_threads: the
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS it finds at import, else the CPUs it may use), so they
can be fixed per process like faster-whisper's `cpu_threads`: each gpuport-T is paired with faster-whisper-T
("equal threads"). Whisper's ops run one host kernel per op call; of those only NumPy's BLAS (OpenBLAS) uses
threads (products over more than 24 rows when it has several); the C kernels run on the calling thread.

Clips: tests/speech_clips.py's espeak-ng clips (default fox, weather, numbers, short and long: 33 s, two 30 s windows).
After one discarded warm-up per system and clip, each repetition runs every system once per clip, the starting
system rotating call by call; medians of --reps repetitions. Figures: RTF = processing s / audio s (lower is better)
and faster-whisper's time / gpuport's at equal threads, per repetition then the median (paired: the two calls
are seconds apart, so the machine's drift cancels; > 1 means gpuport is faster). Every call's token ids are
checked against faster-whisper's at 1 thread, segment by segment; a mismatch is printed, carried in the JSON, and
makes the exit status 1. Also: gpuport's own stage split (r.timings: features, windows), model load times, and
one profiled call per gpuport system (rt.profile(): per op, split into features / encoder / cross-attention K,V
/ decoder (the fused host steps timed as wholes; on the host also the vocabulary's int8 choice per step and the
float32 log-probabilities per window, gpuport/host/vocab.py), and the Python between them: the loop).

The webgpu backend (wgpu-py on lavapipe: a software Vulkan adapter on the CPU, not a GPU) transcribes ONE clip
(--webgpu-clip, default short) once, without a warm-up (any first-use pipeline compilation included): it shows
the device path works end to end; its time is a software rasterizer's, not a GPU's.

The page has no Whisper peer available offline (transformers.js's Whisper needs ONNX weights this machine does
not hold), so this bench is native only and says so.

Needs only `make setup` (faster-whisper comes with the test extra; espeak-ng and sox make the clips once into
.cache/speech). Prints the table; writes bench/results/speech.json and speech.png (matplotlib: this python's,
else the bench venv's .cache/bench/venv; without either the PNG is skipped and the message says so).
Run: `make bench-speech` (takes /tmp/gpuport-heavy.lock), or under that lock:
  .venv/bin/python bench/speech.py [--quick] [--reps 5] [--clips fox,weather,short,long] [--threads 1,2]
                                   [--no-webgpu] [--webgpu-clip short]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _harness import draw_chart, read_line, write_result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHART = HERE / "_speech_chart.py"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS")
DEFAULT_CLIPS = ("fox", "weather", "numbers", "short", "long")
QUICK_CLIPS = ("short", "fox")
FW = "faster-whisper"
NO_PAGE_PEER = ("page: no Whisper peer is available offline (transformers.js's Whisper needs ONNX weights this "
                "machine does not hold): native only")
PY_STAGE = "python (between stages)"   # the loop around the steps (and hostops.greedy where it chooses)
WEBGPU_LABEL = "gpuport webgpu (wgpu-py on lavapipe: a software Vulkan adapter on the CPU)"


# -- the worker: one system in its own process --------------------------------------------------------------------

def worker(kind: str, backend: str) -> int:
    """Protocol, one JSON object per line on the original stdout (anything else the libraries print goes to
    stderr): first {"ready": true, "info": {...}}; {"clip": NAME} transcribes that clip once and answers
    {"s", "tokens" (per segment), "text", "timings"}; {"profile": NAME} (gpuport) answers {"profile": {...}};
    {"placement": true} (gpuport) answers where ops ran; an empty line or EOF ends it."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path[:0] = [str(ROOT / "py"), str(ROOT / "tests")]
    import numpy  # noqa: F401  (both sides load it: not counted as either's import)
    t0 = time.perf_counter()
    if kind == "fw":
        import ctranslate2
        import faster_whisper
    else:
        import gpuport
    import_s = time.perf_counter() - t0
    import speech_clips as speech  # tests/speech_clips.py: the clips and the model folder (it imports gpuport.models.audio: after the timing)

    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0)
    pcms: dict[str, Any] = {}

    def clip(name: str) -> Any:
        if name not in pcms:
            pcms[name] = speech.pcm(name)
        return pcms[name]

    if kind == "fw":
        from faster_whisper import WhisperModel
        t1 = time.perf_counter()
        model = WhisperModel(str(speech.model_dir()), device="cpu", compute_type="float32", cpu_threads=threads)
        t2 = time.perf_counter()
        info = {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
                "cpu_threads": threads, "import_s": import_s, "open_s": 0.0, "load_s": t2 - t1}

        def run(pcm: Any) -> dict[str, Any]:
            segments, _ = model.transcribe(pcm, language="en", beam_size=1, temperature=0.0,
                                           without_timestamps=True, condition_on_previous_text=False)
            segments = list(segments)
            return {"tokens": [list(s.tokens) for s in segments], "text": "".join(s.text for s in segments).strip()}

        profile = placement = None
    else:
        import asyncio

        from gpuport import models
        from gpuport.host import hostops
        gp = gpuport
        t1 = time.perf_counter()
        rt = gp.open_sync(backend=backend)
        t2 = time.perf_counter()
        loop = asyncio.new_event_loop()
        asr = loop.run_until_complete(models.load("whisper-tiny.en", rt))
        t3 = time.perf_counter()
        rinfo = rt.info()
        info = {"gpuport": gp.__version__, "backend": rinfo.get("backend"), "tier": rinfo.get("tier"),
                "adapter": rinfo.get("adapter"), "host_kernels": rinfo.get("host_kernels"),
                "gpuport_host_threads": hostops.blas_threads(), "import_s": import_s, "open_s": t2 - t1,
                "load_s": t3 - t2}

        def run(pcm: Any) -> dict[str, Any]:
            r = loop.run_until_complete(asr.transcribe(pcm))
            return {"tokens": [list(s.tokens) for s in r.segments], "text": r.text, "timings": r.timings}

        def profile(pcm: Any) -> dict[str, Any]:
            before = hostops.calls()
            out = _profile(rt, asr, loop, pcm)
            after = hostops.calls()
            out["host_engine_calls"] = {op: {e: n - before.get(op, {}).get(e, 0) for e, n in per.items()
                                             if n - before.get(op, {}).get(e, 0)} for op, per in after.items()}
            return out

        def placement() -> dict[str, Any]:
            i = rt.info()
            return {"ran": i.get("ran"), "host_kernels_by_op": i.get("host_kernels_by_op"),
                    "host_engine_calls": hostops.calls()}

    info.update(pid=os.getpid(), python=sys.version.split()[0],
                env={k: os.environ[k] for k in THREAD_VARS if k in os.environ})
    proto.write(json.dumps({"ready": True, "info": info}, default=str) + "\n")
    for line in sys.stdin:
        if not line.strip():
            break
        req = json.loads(line)
        if "clip" in req:
            pcm = clip(req["clip"])
            t = time.perf_counter()
            out = run(pcm)
            out["s"] = time.perf_counter() - t
        elif "profile" in req and profile is not None:
            out = {"profile": profile(clip(req["profile"]))}
        elif "placement" in req and placement is not None:
            out = {"placement": placement()}
        else:
            out = {"error": f"unknown request {req!r}"}
        proto.write(json.dumps(out, default=str) + "\n")
    return 0


# the model's stages, wrapped for a profiled call: decode runs op by op (the device), step_host a whole step per
# kernel call (the host: its time is the stage's, with no op records under it), hidden_host a host step up to the
# vocabulary (the prompt's runs inside step_host, whose span holds it); and on the host the vocabulary's part of a
# step, host/vocab.py's int8 choice, and its float32 log-probabilities, one product a window
DECODE = ("decode", "step_host", "hidden_host")
WRAPPED = ("encode", "cross_kv", "encode_host", *DECODE)
VOCAB_STAGES = {"choose": "vocabulary (int8 choice)", "logprobs": "log-probabilities"}


def _profile(rt: Any, asr: Any, loop: Any, pcm: Any) -> dict[str, Any]:
    """One transcription under rt.profile(), each op call given the stage it ran in: the model's encode, cross_kv
    and decode are wrapped on the instance for this call (on the cpu backend ops run eagerly, so a stage's wall time
    is its ops' time; on a device ops are queued and their time shows where a result is read)."""
    spans: list[tuple[str, int, int, float]] = []
    prof_box: list[Any] = []

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if name == "hidden_host" and len(args[0]) > 1:   # the prompt's, inside step_host's span
                return original(*args, **kwargs)
            ops = prof_box[0].ops
            i0, t = len(ops), time.perf_counter()
            out = original(*args, **kwargs)
            stage = ("decoder (prompt)" if len(args[0]) > 1 else "decoder (steps)") if name in DECODE else \
                VOCAB_STAGES.get(name) or \
                {"encode": "encoder", "cross_kv": "cross K,V", "encode_host": "encoder + cross K,V (fused)"}[name]
            spans.append((stage, i0, len(ops), time.perf_counter() - t))
            return out
        return timed

    from gpuport.host.vocab import VocabGreedy
    saved = {name: VocabGreedy.__dict__[name] for name in VOCAB_STAGES}
    for name in WRAPPED:
        setattr(asr, name, wrap(name, getattr(asr, name)))
    for name in VOCAB_STAGES:   # on the class for this call: a model builds its VocabGreedy on its first host step
        setattr(VocabGreedy, name, wrap(name, getattr(VocabGreedy, name)))
    try:
        with rt.profile() as prof:
            prof_box.append(prof)
            t = time.perf_counter()
            r = loop.run_until_complete(asr.transcribe(pcm))
            wall = time.perf_counter() - t
    finally:
        for name in WRAPPED:
            delattr(asr, name)   # the class's methods again
        for name, fn in saved.items():
            setattr(VocabGreedy, name, fn)
    stage_of: dict[int, str] = {}
    for stage, i0, i1, _ in spans:
        for i in range(i0, i1):
            stage_of.setdefault(i, stage)
    first = spans[0][1] if spans else len(prof.ops)
    stages: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(prof.ops):
        stage = stage_of.get(i, "features" if i < first else "other")
        s = stages.setdefault(stage, {"wall_s": 0.0, "calls": 0, "host_s": 0.0, "ops": {}})
        o = s["ops"].setdefault(rec.op, {"calls": 0, "host_s": 0.0, "where": {}, "shapes": {}})
        o["calls"] += 1
        o["host_s"] += rec.host_ms / 1e3
        sig = " . ".join("x".join(map(str, shape)) for shape in rec.shapes[:2])   # the inputs' shapes
        by = o["shapes"].setdefault(sig, {"calls": 0, "host_s": 0.0})
        by["calls"] += 1
        by["host_s"] += rec.host_ms / 1e3
        o["where"][rec.where] = o["where"].get(rec.where, 0) + 1
        s["calls"] += 1
        s["host_s"] += rec.host_ms / 1e3
    for stage, _, _, dt in spans:
        stages.setdefault(stage, {"wall_s": 0.0, "calls": 0, "host_s": 0.0, "ops": {}})["wall_s"] += dt
    features = r.timings.get("features", 0.0)
    if "features" in stages:
        stages["features"]["wall_s"] = features
    in_spans = sum(dt for _, _, _, dt in spans)
    stages[PY_STAGE] = {
        "wall_s": max(0.0, r.timings.get("windows", 0.0) - in_spans), "calls": 0, "host_s": 0.0, "ops": {}}
    return {"wall_s": wall, "timings": r.timings, "timing": prof.timing, "stages": stages,
            "decode_steps": sum(1 for st, *_ in spans if st == "decoder (steps)"), "tokens": len(r.tokens)}


# -- the parent: start the workers, interleave, summarize -----------------------------------------------------

class WorkerFailed(RuntimeError):
    pass


class Worker:
    def __init__(self, name: str, kind: str, backend: str, threads: int, timeout_s: float = 900) -> None:
        self.name, self.kind, self.backend, self.threads, self.timeout_s = name, kind, backend, threads, timeout_s
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=str(ROOT / "py") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for var in THREAD_VARS:
            env[var] = str(threads)
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", kind, backend],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env=env, cwd=ROOT, bufsize=1)
        self.info = self._read()["info"]

    def _stderr_tail(self) -> str:
        self.err.seek(0)
        return self.err.read()[-2000:]

    def _read(self) -> dict[str, Any]:
        line = read_line(self.proc, self.timeout_s)
        if not line:
            self.close()
            raise WorkerFailed(f"{self.name}: the worker gave no answer (exit code {self.proc.poll()}): "
                               f"{self._stderr_tail()}")
        out = json.loads(line)
        if "error" in out:
            raise WorkerFailed(f"{self.name}: {out['error']}")
        return out

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise WorkerFailed(f"{self.name}: {exc}: {self._stderr_tail()}") from None
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def label(kind: str, backend: str, threads: int) -> str:
    return f"{FW}-{threads}t" if kind == "fw" else f"gpuport-{backend}-{threads}t"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def warm_file_cache(path: Path) -> None:
    """Read model.bin once, so the first worker does not pay the disk for the others."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def check_tokens(calls: dict, reference: dict, mismatches: list, log: Callable[[str], None]) -> None:
    for (name, clip, rep), got in calls.items():
        want = reference.get(clip)
        if want is not None and got != want:
            flat_g, flat_w = [t for s in got for t in s], [t for s in want for t in s]
            at = next((i for i, (a, b) in enumerate(zip(flat_g, flat_w)) if a != b), min(len(flat_g), len(flat_w)))
            mismatches.append({"system": name, "clip": clip, "rep": rep, "first_difference_at": at,
                               "got": got, "want": want})
            log(f"  !!! TOKEN MISMATCH: {name} on {clip} ({'warm-up' if rep < 0 else f'rep {rep + 1}'}): first "
                f"difference at token {at}; got {len(flat_g)} tokens in {len(got)} segments, faster-whisper "
                f"{len(flat_w)} in {len(want)}")


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    sys.path[:0] = [str(ROOT / "tests")]
    import speech_clips as speech
    from _peers_lanes import contention, cpu_jiffies

    clips = list(args.clips)
    durations = {c: len(speech.pcm(c)) / 16000 for c in {*clips, *([args.webgpu_clip] if args.webgpu else [])}}
    warm_file_cache(speech.model_dir() / "model.bin")
    log(NO_PAGE_PEER)
    log("clips: " + ", ".join(f"{c} {durations[c]:.1f} s" for c in clips) + f"; {args.reps} repetitions after a "
        f"warm-up; threads {', '.join(map(str, args.threads))}")

    specs = [(kind, backend, t) for t in args.threads for kind, backend in (("fw", "-"), ("gpuport", "cpu"),
                                                                             ("gpuport", "auto"))]
    systems: list[Worker] = []
    errors: dict[str, str] = {}
    for kind, backend, t in specs:
        name = label(kind, backend, t)
        try:
            systems.append(Worker(name, kind, backend, t))
            i = systems[-1].info
            log(f"  {name}: ready (open {i['open_s']:.2f} s, model load {i['load_s']:.2f} s"
                + (f", host kernels {i['host_kernels']} on {i['gpuport_host_threads']} threads, adapter "
                   f"{(i.get('adapter') or {}).get('device', '-')}" if kind == "gpuport" else "") + ")")
        except WorkerFailed as exc:
            errors[name] = str(exc)
            log(f"  {name}: FAILED to start: {str(exc)[:400]}")

    live = list(systems)
    times: dict[str, dict[str, list[float]]] = {s.name: {c: [] for c in clips} for s in systems}
    stage_times: dict[str, dict[str, dict[str, list[float]]]] = {s.name: {c: {} for c in clips} for s in systems}
    warmups: dict[str, dict[str, float]] = {s.name: {} for s in systems}
    tokens: dict[tuple[str, str, int], list] = {}
    texts: dict[str, dict[str, str]] = {c: {} for c in clips}

    def call(s: Worker, clip: str, rep: int) -> dict[str, Any] | None:
        time.sleep(args.gap_s)
        try:
            out = s.ask({"clip": clip})
        except WorkerFailed as exc:
            errors[s.name] = str(exc)
            live.remove(s)
            log(f"  {s.name} dropped: {str(exc)[:400]}")
            return None
        tokens[(s.name, clip, rep)] = out["tokens"]
        return out

    a, t0 = cpu_jiffies(os.getpid()), time.perf_counter()
    for clip in clips:   # warm-up: discarded (first calls fill caches, compile, let auto's selector settle)
        for s in list(live):
            out = call(s, clip, -1)
            if out is not None:
                warmups[s.name][clip] = out["s"]
                texts[clip][s.name] = out["text"]
        log(f"  warm-up {clip}: " + ", ".join(f"{n} {w[clip]:.2f} s" for n, w in warmups.items() if clip in w))
    k = 0
    for rep in range(args.reps):
        for clip in clips:
            order = live[k % len(live):] + live[:k % len(live)] if live else []
            k += 1
            for s in order:
                out = call(s, clip, rep)
                if out is not None:
                    times[s.name][clip].append(out["s"])
                    for stage, v in (out.get("timings") or {}).items():
                        stage_times[s.name][clip].setdefault(stage, []).append(v)
            log(f"  rep {rep + 1}/{args.reps} {clip}: " + ", ".join(
                f"{s.name} {times[s.name][clip][-1]:.2f} s" for s in order if len(times[s.name][clip]) > rep))
    native_contention = contention(a, cpu_jiffies(os.getpid()), time.perf_counter() - t0)

    profiles: dict[str, Any] = {}
    placements: dict[str, Any] = {}
    profile_clip = args.profile_clip if args.profile_clip in clips else clips[0]
    for s in list(live):
        if s.kind != "gpuport":
            continue
        try:
            placements[s.name] = s.ask({"placement": True})["placement"]
            time.sleep(args.gap_s)
            profiles[s.name] = s.ask({"profile": profile_clip})["profile"]
        except WorkerFailed as exc:
            errors[s.name + " (profile)"] = str(exc)
            log(f"  {s.name}: profile FAILED: {str(exc)[:400]}")
    for s in systems:
        s.close()

    webgpu: dict[str, Any] | None = None
    if args.webgpu:
        t = max(args.threads)
        name = label("gpuport", "webgpu", t)
        log(f"  {name}: one call on {args.webgpu_clip} ({WEBGPU_LABEL}; tens of seconds)")
        try:
            w = Worker(name, "gpuport", "webgpu", t, timeout_s=args.webgpu_timeout_s)
            try:
                time.sleep(args.gap_s)
                out = w.ask({"clip": args.webgpu_clip})
                tokens[(name, args.webgpu_clip, 0)] = out["tokens"]
                placements[name] = w.ask({"placement": True})["placement"]
                webgpu = {"system": name, "label": WEBGPU_LABEL, "clip": args.webgpu_clip, "threads": t,
                          "audio_s": durations[args.webgpu_clip], "s": out["s"],
                          "rtf": out["s"] / durations[args.webgpu_clip], "timings": out.get("timings"),
                          "text": out["text"], "info": w.info, "runs": 1, "warm_up": False}
            finally:
                w.close()
        except WorkerFailed as exc:
            errors[name] = str(exc)
            log(f"  {name}: FAILED: {str(exc)[:400]}")

    # the reference: faster-whisper at 1 thread (tests/speech_clips.py's), its warm-up call
    ref_name = label("fw", "-", 1)
    reference = {c: tokens[(ref_name, c, -1)] for c in {*clips, args.webgpu_clip} if (ref_name, c, -1) in tokens}
    if not reference:
        ref_name = next((n for n, c, r in tokens if n.startswith(FW) and r == -1), ref_name)
        reference = {c: tokens[(n, c, r)] for n, c, r in tokens if n == ref_name and r == -1}
    mismatches: list[dict[str, Any]] = []
    check_tokens(tokens, reference, mismatches, log)
    if webgpu is not None and webgpu["clip"] not in reference:
        webgpu["tokens_checked"] = False

    # per clip and system: medians, RTF, stage split; gpuport against faster-whisper at equal threads
    per_clip: dict[str, dict[str, Any]] = {}
    for clip in clips:
        rows: dict[str, Any] = {}
        for s in systems:
            runs = times[s.name][clip]
            if not runs:
                continue
            row = {"kind": s.kind, "backend": s.backend, "threads": s.threads, "median_s": median(runs),
                   "rtf": median(runs) / durations[clip], "runs_s": runs, "warmup_s": warmups[s.name].get(clip),
                   "tokens_equal_reference": not any(m["system"] == s.name and m["clip"] == clip for m in mismatches)}
            st = stage_times[s.name][clip]
            if st:
                row["stages_s"] = {k: median(v) for k, v in st.items()}
            if s.kind == "gpuport":
                peer = times.get(label("fw", "-", s.threads), {}).get(clip, [])
                pairs = [p / g for p, g in zip(peer, runs)]
                if pairs:
                    row["fw_over_gpuport"] = median(pairs)
                    row["fw_over_gpuport_runs"] = pairs
                    row["fw_over_gpuport_of_medians"] = median(peer) / median(runs)
            rows[s.name] = row
        per_clip[clip] = {"audio_s": durations[clip], "text": texts[clip].get(ref_name),
                          "tokens": sum(len(seg) for seg in reference.get(clip, [])),
                          "segments": len(reference.get(clip, [])), "systems": rows}
    summary = {}
    for s in systems:
        if s.kind == "gpuport":
            ratios = [per_clip[c]["systems"].get(s.name, {}).get("fw_over_gpuport") for c in clips]
            summary[s.name] = {"fw_over_gpuport_geomean": geomean([r for r in ratios if r]),
                               "vs": label("fw", "-", s.threads)}
    if webgpu is not None:
        peer = times.get(label("fw", "-", webgpu["threads"]), {}).get(webgpu["clip"], [])
        if peer:
            webgpu["fw_over_gpuport"] = median(peer) / webgpu["s"]
            webgpu["vs"] = label("fw", "-", webgpu["threads"])
        webgpu["tokens_equal_reference"] = not any(m["system"] == webgpu["system"] for m in mismatches)
    loads = {s.name: {"threads": s.threads, **{k: s.info.get(k) for k in ("import_s", "open_s", "load_s")}}
             for s in systems}
    if webgpu is not None:
        loads[webgpu["system"]] = {"threads": webgpu["threads"],
                                   **{k: webgpu["info"].get(k) for k in ("import_s", "open_s", "load_s")}}
    return {"quick": args.quick, "reps": args.reps, "threads": args.threads, "clips": clips,
            "gap_s": args.gap_s, "reference": ref_name, "page": NO_PAGE_PEER,
            "results": per_clip, "summary": summary, "webgpu": webgpu, "loads": loads,
            "workers": {s.name: s.info for s in systems}, "placements": placements,
            "profile_clip": profile_clip, "profiles": profiles, "contention": native_contention,
            "token_mismatches": mismatches, "tokens_match": not mismatches, "errors": errors}


def stage_s(timings: dict[str, float], key: str) -> str:
    return f"{timings[key]:.3f}" if key in timings else "-"


def print_table(doc: dict[str, Any]) -> None:
    print(f"\nWhisper tiny.en natively ({doc['reps']} repetitions after a warm-up, medians; interleaved). "
          f"RTF = processing s / audio s (lower is better); fw/gp = faster-whisper's time / gpuport's at equal "
          f"threads, median of paired repetitions (> 1: gpuport faster). tokens: the reference's count; check: every "
          f"call's token ids against {doc['reference']}'s.")
    head = (f"{'clip':8} {'audio s':>7} {'tokens':>6}  {'system':22} {'median s':>8} {'RTF':>7} {'fw/gp':>6}  "
            f"{'features s':>10} {'windows s':>9}  check")
    print(head)
    print("-" * len(head))
    for clip, c in doc["results"].items():
        for name, r in c["systems"].items():
            st = r.get("stages_s") or {}
            ratio = f"{r['fw_over_gpuport']:6.2f}" if "fw_over_gpuport" in r else f"{'base':>6}"
            print(f"{clip:8} {c['audio_s']:7.1f} {c['tokens']:6}  {name:22} {r['median_s']:8.3f} {r['rtf']:7.3f} {ratio}  "
                  f"{stage_s(st, 'features'):>10} {stage_s(st, 'windows'):>9}  "
                  f"{'= ref' if r['tokens_equal_reference'] else 'MISMATCH'}")
    w = doc.get("webgpu")
    if w:
        st = w.get("timings") or {}
        ratio = f"{w['fw_over_gpuport']:6.3f}" if "fw_over_gpuport" in w else f"{'-':>6}"
        print(f"{w['clip']:8} {w['audio_s']:7.1f} {doc['results'].get(w['clip'], {}).get('tokens', ''):>6}  {w['system']:22} {w['s']:8.3f} {w['rtf']:7.3f} {ratio}  "
              f"{stage_s(st, 'features'):>10} {stage_s(st, 'windows'):>9}  "
              f"{'= ref' if w['tokens_equal_reference'] else 'MISMATCH'}   <- 1 call, no warm-up; lavapipe is "
              f"a software Vulkan adapter on the CPU (vs {w.get('vs', '-')})")
    print("\nfaster-whisper time / gpuport time at equal threads, geometric mean over the clips (> 1: gpuport faster):")
    for name, s in doc["summary"].items():
        g = s["fw_over_gpuport_geomean"]
        print(f"  {name:22} vs {s['vs']:18} {g:.2f}x" if g else f"  {name:22} -")
    print("\nstart-up per worker process (s): import / runtime open / models.load (or WhisperModel(...)); "
          "model.bin in the OS file cache:")
    fw_load = {n: l["load_s"] for n, l in doc["loads"].items() if n.startswith(FW)}
    for name, l in doc["loads"].items():
        peer = fw_load.get(label("fw", "-", l["threads"]))
        ratio = f"  fw load / this load {peer / l['load_s']:.2f}x" if peer and not name.startswith(FW) else ""
        print(f"  {name:22} import {l['import_s']:6.2f}  open {l['open_s']:6.2f}  load {l['load_s']:6.2f}{ratio}")
    for name, p in doc["profiles"].items():
        print(f"\nwhere {name}'s time goes, one profiled call on {doc['profile_clip']} "
              f"({p['wall_s']:.2f} s under the profiler; {p['tokens']} tokens, {p['decode_steps']} decoder steps; "
              f"op times: {p['timing']}):")
        total = sum(s["wall_s"] for s in p["stages"].values()) or 1.0
        for stage, s in sorted(p["stages"].items(), key=lambda kv: -kv[1]["wall_s"]):
            if not s["wall_s"] and not s["host_s"]:
                continue
            top = sorted(s["ops"].items(), key=lambda kv: -kv[1]["host_s"])[:4]
            ops = ", ".join(f"{op} {o['host_s']:.3f} s/{o['calls']}" +
                            (f" [{'/'.join(o['where'])}]" if set(o["where"]) != {"cpu"} else "") for op, o in top)
            print(f"  {stage:20} {s['wall_s']:7.3f} s {s['wall_s'] / total:6.1%}  {ops}")
            mm = s["ops"].get("matmul", {}).get("shapes", {})
            if len(mm) > 1 and s["ops"]["matmul"]["host_s"] > 0.05 * s["wall_s"]:
                top = sorted(mm.items(), key=lambda kv: -kv[1]["host_s"])[:3]
                print(f"  {'':20} matmul by input shapes: " + ", ".join(
                    f"{sig} {v['host_s']:.3f} s/{v['calls']}" for sig, v in top))
        engines = "; ".join(f"{op} " + ", ".join(f"{e} {n}" for e, n in per.items())
                            for op, per in p.get("host_engine_calls", {}).items() if per)
        print(f"  host kernel calls by engine (native-simd: the C kernels on the calling thread; numpy: NumPy/its "
              f"BLAS): {engines}")
    pl = {n: p for n, p in doc["placements"].items() if "auto" in n or "webgpu" in n}
    for name, p in pl.items():
        ran = p.get("ran") or {}
        sides: dict[str, int] = {}
        for per in ran.values():
            for side, n in per.items():
                sides[side] = sides.get(side, 0) + n
        dev = sorted(op for op, per in ran.items() if per.get("webgpu"))
        print(f"\n{name}: op calls by side since start {sides}; ops that ran on the adapter: {dev or 'none'}")
    c = doc["contention"]
    print(f"\nmachine during the native runs: wall {c['wall_s']} s, this bench's CPU {c['bench_cpu_s']} s, other "
          f"processes' CPU {c['foreign_cpu_s']} s, steal {c['steal_s']} s (2 cores: foreign CPU inflates both sides)")
    print(doc["page"])
    if doc["token_mismatches"]:
        print(f"\n!!! {len(doc['token_mismatches'])} TOKEN MISMATCH(ES) against {doc['reference']}: see "
              f"token_mismatches in the JSON")
    for name, e in doc["errors"].items():
        print(f"!!! {name}: {e[:300]}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: 1 repetition, clips {','.join(QUICK_CLIPS)}")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per system and clip (after a warm-up)")
    ap.add_argument("--clips", default=None, help=f"comma-separated (default {','.join(DEFAULT_CLIPS)})")
    ap.add_argument("--threads", default="1,2", help="thread counts, each run by every system (default 1,2)")
    ap.add_argument("--gap-s", type=float, default=0.25,
                    help="idle seconds before each call: the previous system's spinning threads go to sleep")
    ap.add_argument("--no-webgpu", dest="webgpu", action="store_false", help="skip the webgpu (lavapipe) call")
    ap.add_argument("--webgpu-clip", default="short", help="the one clip webgpu transcribes (default short)")
    ap.add_argument("--webgpu-timeout-s", type=float, default=600)
    ap.add_argument("--profile-clip", default="fox", help="the clip of the profiled gpuport call (default fox)")
    ap.add_argument("--out", default=None, help="result name under bench/results (default speech[-quick])")
    args = ap.parse_args()
    if args.quick:
        args.reps = 1
        args.clips = args.clips or ",".join(QUICK_CLIPS)
    args.clips = [c for c in (args.clips or ",".join(DEFAULT_CLIPS)).split(",") if c]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    sys.path[:0] = [str(ROOT / "tests")]
    import speech_clips as speech
    unknown = [c for c in [*args.clips, args.webgpu_clip] if c not in speech.CLIPS and c != "long"]
    if unknown or args.reps < 1 or not args.threads:
        ap.error(f"clips must be among {[*speech.CLIPS, 'long']} (got {unknown}), --reps >= 1, --threads non-empty")

    doc = run(args, lambda line: print(line, flush=True))
    print_table(doc)
    name = args.out or ("speech-quick" if args.quick else "speech")
    path = write_result(name, doc)
    print(f"\nJSON: {path}")
    print(draw_chart(CHART, path, path.with_suffix(".png")))
    return 1 if doc["token_mismatches"] or doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
