"""The whole coverage matrix of a `make test` run: the parts each pytest process wrote (e2e/report/coverage-native.json
from tests/, coverage-browsers.json from e2e/) merged, written as e2e/report/coverage.json and coverage.md (kernel
variant, strategy and host kernel by engine/thread/tier, each cell naming a test that proved it), and checked
against the covering design (tests/coverage_matrix.py): exit 1 naming every required cell no test proved.

    .venv/bin/python e2e/e2e_coverage.py [--parts native,browsers]
    .venv/bin/python e2e/e2e_coverage.py --compare BEFORE.json AFTER.json   # what a change of the suite lost
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from coverage_matrix import REPORT_DIR, Matrix  # noqa: E402
from coverage_plugin import design  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="native,browsers", help="the parts to merge (coverage-<part>.json)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="two merged matrices (coverage.json): the required cells each proves, and the cells lost")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    merged, absent = Matrix(), []
    for part in args.parts.split(","):
        path = REPORT_DIR / f"coverage-{part}.json"
        if path.is_file():
            merged.merge(Matrix.load(path))
        else:
            absent.append(str(path))
    cells = design()
    merged.save(REPORT_DIR / "coverage.json")
    (REPORT_DIR / "coverage.md").write_text("# Coverage matrix\n\nWhat each parity test proved, where (docs/testing.md)."
                                            "\n\n" + merged.to_markdown(cells), encoding="utf-8")
    missing = merged.missing(cells)
    proven = len(cells) - len(missing)
    print(f"coverage matrix: {proven} of {len(cells)} required cells proven, {len(merged.cells)} cells filled "
          f"(e2e/report/coverage.md)")
    for path in absent:
        print(f"  no part at {path}: its pytest process did not finish")
    for row, column in missing:
        print(f"  MISSING {row} on {column}")
    return 1 if missing or absent else 0


def compare(before_path: Path, after_path: Path) -> int:
    """Exit 1 when AFTER leaves empty a required cell that BEFORE proved; list every cell BEFORE had and AFTER lacks
    (a lane that no longer repeats a case another lane of its engine runs: expected, and said)."""
    before, after, cells = Matrix.load(before_path), Matrix.load(after_path), design()
    lost_required = [c for c in cells if before.filled(*c) and not after.filled(*c)]
    print(f"required cells proven: before {len(cells) - len(before.missing(cells))} of {len(cells)}, "
          f"after {len(cells) - len(after.missing(cells))} of {len(cells)}")
    print(f"cells filled: before {len(before.cells)}, after {len(after.cells)}")
    gone = sorted(set(before.cells) - set(after.cells))
    columns: dict[str, int] = {}
    for _, column in gone:
        columns[column] = columns.get(column, 0) + 1
    for column, n in sorted(columns.items()):
        print(f"  no longer proven on {column}: {n} rows (not required there: another lane of the engine proves them)")
    for row, column in lost_required:
        print(f"  LOST (required) {row} on {column}")
    return 1 if lost_required else 0


if __name__ == "__main__":
    sys.exit(main())
