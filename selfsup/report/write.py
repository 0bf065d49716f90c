"""report.md and report.png for a directory of runs, on demand or at the end of a multirun."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from hydra.experimental.callback import Callback

from selfsup.report.markdown import markdown
from selfsup.report.plot import plot
from selfsup.report.runs import collect


def write_report(root: Path, out_dir: Optional[Path] = None) -> tuple[Path, Path]:
    root = Path(root).resolve()
    out_dir = Path(out_dir) if out_dir else root
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect(root)
    md_path, png_path = out_dir / "report.md", out_dir / "report.png"
    md_path.write_text(markdown(root, runs))
    plot(png_path, runs)
    failed = sum(r.failed for r in runs)
    print(
        f"report: {md_path}\nreport: {png_path}"
        + (f"\n{failed} of {len(runs)} job(s) failed: listed in report.md" if failed else ""),
        flush=True,
    )
    return md_path, png_path


class SweepReport(Callback):
    """Hydra callback: a multirun (`-m`, `make sweep`) ends by writing report.md + report.png in
    its sweep directory. A reporting error is printed, never raised: the jobs' results stand."""

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            write_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # noqa: BLE001
            print(
                f"report: not written ({type(err).__name__}: {err}); run scripts/compare.py <sweep dir>",
                file=sys.stderr,
                flush=True,
            )
