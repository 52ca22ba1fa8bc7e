"""Where a test run's time went: wall time per test file and per browser lane, from the JUnit XML each pytest process
of `make test` writes (.cache/test-unit.xml, test-e2e.xml, test-hosts-*.xml). A test's time is its setup, call and
teardown, so a lane's page boot counts in its first test.

    .venv/bin/python tests/time_table.py .cache/test-unit.xml .cache/test-e2e.xml .cache/test-hosts-*.xml [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


def lanes() -> list[str]:
    from e2e_matrix import LANES
    return sorted(LANES, key=len, reverse=True)   # longest first: chromium-webgpu-main before chromium-webgpu


def read(path: Path) -> list[tuple[str, str, float]]:
    """(file, test name, seconds) of every test case in a JUnit XML file."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        out.append((module.replace(".", "/") + ".py", case.get("name", ""), float(case.get("time") or 0)))
    return out


def lane_of(name: str, known: list[str]) -> str | None:
    params = re.search(r"\[(.*)\]", name)
    if not params:
        return None
    return next((lane for lane in known if params.group(1).startswith(lane)), None)


def table(title: str, counts: Counter, n: dict[str, int], top: int) -> list[str]:
    total = sum(counts.values())
    lines = [f"{title:<58} {'tests':>6} {'seconds':>9} {'share':>6}"]
    for key, seconds in counts.most_common(top):
        lines.append(f"{key:<58} {n[key]:>6} {seconds:>9.1f} {100 * seconds / total if total else 0:>5.1f}%")
    rest = counts.most_common()[top:]
    if rest:
        lines.append(f"{f'({len(rest)} more)':<58} {sum(n[k] for k, _ in rest):>6} {sum(s for _, s in rest):>9.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("xml", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    known = lanes()
    for path in args.xml:
        if not path.is_file():
            print(f"{path}: missing (its pytest process did not finish)")
            continue
        cases = read(path)
        by_file, files_n = Counter(), Counter()
        by_lane, lanes_n = Counter(), Counter()
        for file, name, seconds in cases:
            by_file[file] += seconds
            files_n[file] += 1
            lane = lane_of(name, known) if file.startswith("e2e/") else None
            if lane:
                by_lane[lane] += seconds
                lanes_n[lane] += 1
        print(f"== {path}: {len(cases)} tests, {sum(by_file.values()):.0f} s of test time ==")
        print("\n".join(table("per test file", by_file, files_n, args.top)))
        if by_lane:
            print("\n".join(table("per lane (tests parametrized by a lane; its page's boot included)", by_lane,
                                  lanes_n, len(by_lane))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
