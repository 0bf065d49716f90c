"""Compare runs locally: `python scripts/compare.py <outputs dir | multirun dir | run dir> [--out DIR]`.

Reads every results.json (and <run>/csv/metrics.csv) below the directory and writes report.md
(method, data, backbone, epochs, kNN / linear top-1, images/s, time; failed jobs listed) and
report.png (accuracy bars per run, kNN top-1 over epochs per run), then prints both paths."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.report.write import write_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="outputs", help="directory holding runs (default: outputs)")
    parser.add_argument("--out", default=None, help="where to write report.md/report.png (default: DIR)")
    args = parser.parse_args()
    root = Path(args.dir)
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    if not any(root.rglob("results.json")) and not any(root.rglob(".hydra")):
        print(f"error: no runs (results.json) below {root}", file=sys.stderr)
        return 2
    write_report(root, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
