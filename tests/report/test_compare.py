"""scripts/compare.py over a multirun: one row per completed job, failed jobs recorded, jobs without results.json
listed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, TINY_LINEAR_RUN, assert_succeeded, run_script

QUICK_LINEAR = ["eval.linear.weight_decays=[1.0e-4]", "eval.linear.max_iter=50"]


@pytest.fixture(scope="module")
def method_multirun(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("multirun")
    # lr=-1 fails its config check: jobs 0 and 2 fail first, jobs 1 and 3 must still run.
    proc = run_script(
        "train.py",
        [
            "-m",
            "method=simclr,byol",
            "optimizer.lr=-1,0.3",
            *TINY_LINEAR_RUN,
            *QUICK_LINEAR,
            f"hydra.sweep.dir={sweep_dir}",
        ],
    )
    assert_succeeded(proc, "train.py -m method=simclr,byol")
    return sweep_dir, proc


def _table(report: str) -> list[dict]:
    lines = [line for line in report.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_multirun_then_compare_gives_one_row_per_completed_job(method_multirun, tmp_path):
    sweep_dir, _ = method_multirun
    jobs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    assert len(jobs) == 4
    completed = [json.loads((j / "results.json").read_text()) for j in jobs]
    completed = [r for r in completed if r.get("status") != "failed"]
    assert sorted(r["method"] for r in completed) == ["byol", "simclr"]

    proc = subprocess.run(
        [sys.executable, "scripts/compare.py", str(sweep_dir), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_succeeded(proc, "scripts/compare.py")
    assert str(tmp_path / "report.md") in proc.stdout and str(tmp_path / "report.png") in proc.stdout
    rows = _table((tmp_path / "report.md").read_text())
    assert len(rows) == 2
    for row, results in zip(sorted(rows, key=lambda r: r["method"]), sorted(completed, key=lambda r: r["method"])):
        assert (row["method"], row["data"], row["backbone"], row["epochs"]) == (
            results["method"],
            "digits",
            "resnet18",
            str(results["epochs"]),
        )
        assert row["kNN top-1"] == f"{results['knn_top1']:.4f}"
        assert row["linear top-1"] == f"{results['linear_top1']:.4f}"
        assert row["images/s"] == f"{results['train_images_per_sec']:.1f}"
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_failed_job_is_recorded_and_does_not_lose_the_others(method_multirun):
    sweep_dir, proc = method_multirun
    failed = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    failed = [r for r in failed if r.get("status") == "failed"]
    assert len(failed) == 2 and {r["method"] for r in failed} == {"simclr", "byol"}
    assert all("optimizer.lr must be > 0" in r["error"] and "optimizer.lr=-1" in r["overrides"] for r in failed)
    assert "failed" in proc.stderr
    # The sweep ended with the report (Hydra callback), failed jobs listed.
    report = (sweep_dir / "report.md").read_text()
    assert (sweep_dir / "report.png").is_file()
    assert "2 completed, 2 failed" in report and report.count("optimizer.lr must be > 0") == 2
    assert len(_table(report)) == 2


def test_report_lists_a_job_without_results_json(tmp_path):
    """A job killed before writing results.json still appears, as failed."""
    from selfsup.report.write import write_report

    (tmp_path / "0_x" / ".hydra").mkdir(parents=True)
    (tmp_path / "0_x" / ".hydra" / "config.yaml").write_text("method: {name: byol}\ndata: {name: digits}\n")
    (tmp_path / "1_y").mkdir()
    (tmp_path / "1_y" / "results.json").write_text(
        json.dumps(
            {
                "method": "simclr",
                "data": "digits",
                "backbone": "resnet18",
                "epochs": 2,
                "knn_top1": 0.5,
                "linear_top1": 0.75,
                "train_images_per_sec": 100.0,
                "train_seconds": 65.0,
            }
        )
    )
    md, png = write_report(tmp_path)
    report = md.read_text()
    assert "1 completed, 1 failed" in report and "no results.json" in report and "byol" in report
    assert re.search(r"\| simclr \| digits \| resnet18 \| 2 \| 0\.5000 \| 0\.7500 \| 100\.0 \| 1m05s \|", report)
    assert png.stat().st_size > 10_000
