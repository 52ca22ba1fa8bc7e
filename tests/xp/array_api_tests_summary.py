"""The share of the standard's own test suite (data-apis/array-api-tests) that passes, per backend, from the JSON
reports `make array-api-tests` writes: all tests, and the main namespace's (without the linalg and fft extensions),
passed (and xpassed) over every test that ran (skipped ones, whose dtype or extension was left out, do not count).

    python tests/xp/array_api_tests_summary.py report-cpu.json report-webgpu.json [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

EXTENSION = re.compile(r"test_linalg\.py|test_fft\.py|\[(linalg|fft)[-.\]]|linalg\.|fft\.")


def outcomes(report: dict) -> tuple[Counter, Counter]:
    """Outcome counts of every test and of the main namespace's."""
    every, main = Counter(), Counter()
    for test in report["tests"]:
        outcome = test["outcome"]
        every[outcome] += 1
        if not EXTENSION.search(test["nodeid"]):
            main[outcome] += 1
    return every, main


def share(counts: Counter) -> float:
    ran = sum(n for outcome, n in counts.items() if outcome != "skipped")
    return (counts["passed"] + counts["xpassed"]) / ran if ran else 0.0


def summary(path: Path) -> dict:
    report = json.loads(path.read_text(encoding="utf-8"))
    every, main = outcomes(report)
    return {"report": str(path), "all": dict(every), "all_share": round(share(every), 4), "main": dict(main),
            "main_share": round(share(main), 4), "duration_s": round(report.get("duration", 0.0), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = [summary(p) for p in args.reports]
    for row in rows:
        print(f"{row['report']}: main namespace {row['main_share']:.1%} passed {row['main']}; "
              f"with linalg {row['all_share']:.1%} {row['all']} ({row['duration_s']} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
