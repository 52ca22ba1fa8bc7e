"""Fault probe for the reliability issue (14): for each fault class of its findings 1-7, try many concrete
faults (seeded, randomised where that makes sense) and count how many were survived, i.e. the documented
behaviour happened: a correct result, or the right typed error naming the problem. Not survived: a crash,
a hang, a wrong / zero / NaN result, an untyped exception or a typed one that names nothing.

Each class runs in a child process of its own, so a crash (the Rust panic of finding 1) or a hang is
counted against its class instead of ending the probe; every trial is written to the child's log as it
ends. Prints the table (class | tried | survived | an example of what happened), writes
bench/results/faults.json, exits 1 if any fault was not survived.

    flock /tmp/gpuport-heavy.lock python bench/faults.py [--only threads,numerics] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
SLOW_S = 30.0          # one trial taking longer than this is a hang, whatever it returned
CLASS_TIMEOUT_S = 240  # a class's child is killed after this


class NotSurvived(Exception):
    """Raised by a trial when the documented behaviour did not happen; the message says what did."""


@dataclass
class Tally:
    """The trials of one fault class; `log` (a path) receives each as a JSON line when it ends."""

    name: str
    log: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, what: str, survived: bool, happened: str) -> None:
        row = {"fault": what, "survived": survived, "happened": happened[:300]}
        self.rows.append(row)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def trial(self, what: str, fn: Callable[[], str]) -> bool:
        """Run one fault: fn returns what happened when it was survived, raises NotSurvived when not;
        any other exception is untyped (not survived), and so is a trial slower than SLOW_S."""
        t0 = time.perf_counter()
        try:
            happened, ok = fn(), True
        except NotSurvived as exc:
            happened, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - counting it is the point
            happened, ok = f"unexpected {type(exc).__name__}: {exc}", False
        took = time.perf_counter() - t0
        if took > SLOW_S:
            happened, ok = f"took {took:.0f} s (a hang): {happened}", False
        self.record(what, ok, happened)
        return ok


def expect_error(fn: Callable[[], Any], types: type | tuple[type, ...], *words: str) -> str:
    """fn must raise one of `types` whose message holds every word; returns 'Type: message'."""
    try:
        got = fn()
    except types as exc:
        msg = str(exc)
        missing = [w for w in words if w not in msg]
        if missing:
            raise NotSurvived(f"{type(exc).__name__} without {missing}: {msg[:160]}") from None
        return f"{type(exc).__name__}: {msg}"
    except Exception as exc:  # noqa: BLE001 - the wrong type is the finding
        raise NotSurvived(f"{type(exc).__name__} instead of {_names(types)}: {str(exc)[:160]}") from None
    raise NotSurvived(f"no error (expected {_names(types)}); returned {_short(got)}")


def expect_close(got: Any, want: Any, rtol: float = 1e-4, atol: float = 1e-5, what: str = "result") -> str:
    """got must equal want (NaN where it has NaN) within the tolerances."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise NotSurvived(f"{what}: shape {got.shape}, expected {want.shape}")
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        i = np.unravel_index(int(np.argmax(bad)), bad.shape)
        zeros = " (zeros)" if got.size and not got.any() else ""
        raise NotSurvived(f"{what}: {int(bad.sum())} of {bad.size} wrong{zeros}; at {i} got {got[i]!r}, "
                          f"want {want[i]!r}")
    return f"{what} correct"


def _names(types: type | tuple[type, ...]) -> str:
    return "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


# -- running classes in children ----------------------------------------------------------------------

def load_target(ref: str) -> Callable[..., None]:
    """'path/to/file.py:function' -> the function (the classes live in bench/_fault_*.py)."""
    path, name = ref.rsplit(":", 1)
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).resolve().parent))
    spec.loader.exec_module(module)
    return getattr(module, name)


def run_isolated(name: str, ref: str, seed: int, quick: bool, timeout_s: float = CLASS_TIMEOUT_S) -> dict:
    """Run one class (`ref`, see load_target) in a child; a crash or a hang counts as one more fault."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trials.jsonl"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ref, "--log", str(log),
               "--seed", str(seed), "--name", name] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env={**os.environ, "GPUPORT_CACHE": str(Path(tmp) / "cache")})
            rc, tail = proc.returncode, (proc.stderr or proc.stdout)[-400:]
        except subprocess.TimeoutExpired:
            rc, tail = None, f"killed after {timeout_s:.0f} s"
        seconds = time.perf_counter() - t0
        tally = Tally(name)
        if log.exists():
            tally.rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if rc != 0:
            how = "hung" if rc is None else f"crashed (exit {rc})"
            tally.record(f"the {name} class as a whole", False,
                         f"the process {how} after {len(tally.rows)} trials: {tail.strip()[-300:]}")
    return summarise(tally, seconds)


def summarise(tally: Tally, seconds: float) -> dict:
    failed = [r for r in tally.rows if not r["survived"]]
    shown = failed[0] if failed else (tally.rows[0] if tally.rows else None)
    return {"class": tally.name, "tried": len(tally.rows), "survived": len(tally.rows) - len(failed),
            "seconds": round(seconds, 1),
            "example": f"{shown['fault']}: {shown['happened']}" if shown else "",
            "not_survived": failed[:20], "trials": tally.rows}


def table(results: list[dict]) -> str:
    lines = ["| class | tried | survived | example of what happened |", "|---|---:|---:|---|"]
    for r in results:
        ex = r["example"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['class']} | {r['tried']} | {r['survived']} | {ex[:150]} |")
    tried, survived = sum(r["tried"] for r in results), sum(r["survived"] for r in results)
    lines.append(f"| **all** | **{tried}** | **{survived}** | |")
    return "\n".join(lines)


# The classes, one per finding of issue 14 (the numbers are the findings').
CLASSES = {
    "1 threads share a runtime": "_fault_device.py:threads",
    "2 a failed batch": "_fault_device.py:failed_batch",
    "3 device-side bad ids": "_fault_device.py:device_ids",
    "4 numerics (NaN/Inf/huge/tiny/empty)": "_fault_numerics.py:numerics",
    "5 bad arguments": "_fault_numerics.py:arguments",
    "6a loader manifests and header": "_fault_files.py:loader",
    "6b cache files": "_fault_files.py:caches",
    "7 dev server": "_fault_files.py:server",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer trials per class (a smoke run)")
    p.add_argument("--only", default="", help="comma-separated class numbers or name fragments")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import random

        import numpy as np

        random.seed(args.seed)
        sys.modules.setdefault("faults", sys.modules[__name__])   # one NotSurvived for the class files too
        load_target(args.child)(Tally(args.name, Path(args.log)), np.random.default_rng(args.seed), args.quick)
        return 0
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    results = []
    for name, ref in CLASSES.items():
        if wanted and not any(name.startswith(w) or w in name for w in wanted):
            continue
        r = run_isolated(name, str(HERE / ref.split(":")[0]) + ":" + ref.split(":")[1], args.seed, args.quick)
        print(f"{name}: {r['survived']}/{r['tried']} survived ({r['seconds']} s)", flush=True)
        results.append(r)
    print()
    print(table(results))
    for r in results:
        for f in r["not_survived"]:
            print(f"NOT SURVIVED [{r['class']}] {f['fault']}: {f['happened']}")
    sys.path.insert(0, str(HERE))
    from _harness import write_result

    tried, survived = sum(r["tried"] for r in results), sum(r["survived"] for r in results)
    path = write_result("faults", {"seed": args.seed, "quick": args.quick, "tried": tried, "survived": survived,
                                   "classes": [{k: v for k, v in r.items() if k != "trials"} | {
                                       "faults": [t["fault"] for t in r["trials"]][:400]} for r in results]})
    print("wrote", path)
    return 0 if tried == survived else 1


if __name__ == "__main__":
    sys.exit(main())
