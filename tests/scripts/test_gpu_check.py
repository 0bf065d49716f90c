"""`make gpu-check` (scripts/gpu_check.py) before a GPU exists: the dry run takes every part's code up
to its CUDA calls on the CPU and gives each part a status; the GPU run's time boxes fit 9 minutes; a
part that raises or overruns its box is recorded and the next one still runs."""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch
from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402

NAMES = ["syncbn", "step", "epoch", "loader", "equality", "recipes", "train"]


def test_the_gpu_run_fits_nine_minutes_by_its_own_time_boxes():
    assert [p.name for p in gpu_check.PARTS] == NAMES
    assert sum(p.limit_s for p in gpu_check.PARTS) <= gpu_check.LIMIT_S == 540


def test_dry_run_runs_every_part_and_gives_each_a_status(tmp_path):
    out = tmp_path / "check"
    proc = run_script("scripts/gpu_check.py", ["--dry-run", "--out", str(out)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == NAMES
    assert {gpu_check.status_kind(p["status"]) for p in parts.values()} <= {"passed", "measured", "skipped"}, {
        name: p["status"] for name, p in parts.items()
    }
    assert report["time_boxes_s"] == sum(p["limit_s"] for p in parts.values()) <= 540
    assert f"= {report['time_boxes_s']} s (limit 540 s)" in proc.stdout.splitlines()[0]  # the sum, printed first
    assert f"gpu_check: {out / 'gpu_check.json'}" in proc.stdout

    # GPU-only parts say so; the rest ran their code on the CPU and measured or checked something.
    assert parts["syncbn"]["status"].startswith("skipped: no CUDA")
    assert parts["recipes"]["status"].startswith("skipped: no data_root= given")
    steps = {r["label"]: r for r in parts["step"]["rows"]}
    assert list(steps) == ["simclr cifar default", "simclr 224px nchw", "simclr cifar compile"]
    assert steps["simclr cifar default"]["channels_last"] and not steps["simclr 224px nchw"]["channels_last"]
    assert all(steps[k]["module_images_per_sec"] > 0 and steps[k]["bare_images_per_sec"] > 0 for k in list(steps)[:2])
    assert steps["simclr cifar compile"]["skipped"].startswith("--dry-run")
    assert parts["epoch"]["rows"][0]["epoch_s"] == pytest.approx(
        50_000 / steps["simclr cifar default"]["module_images_per_sec"], rel=1e-3
    )
    loader = {r["label"]: r for r in parts["loader"]["rows"]}
    assert all(
        loader[k]["images_per_sec"] > 0
        for k in ("CPU decode + augment", "CPU decode, on-device colour ops", "nvJPEG decode + on-device ops")
    )
    equality = {r["label"]: r for r in parts["equality"]["rows"]}
    assert parts["equality"]["status"].startswith("passed")
    assert all(equality[f"augment {op}"]["ok"] for op in gpu_check.AUGMENT_OPS)
    assert equality["nvJPEG vs queued work"]["skipped"] == "no CUDA"
    assert parts["train"]["status"].startswith("passed")
    results = json.loads((out / "train" / "results.json").read_text())
    assert results["knn_top1"] == pytest.approx(parts["train"]["rows"][0]["knn_top1"], abs=1e-4)

    markdown = run_script("scripts/gpu_check.py", ["--to-markdown", str(out / "gpu_check.json")])
    assert markdown.returncode == 0 and "| 2 step | **status** | measured" in markdown.stdout


def _raises(check):
    raise ValueError("broken on purpose")


def _overruns(check):
    check.row("before the box", figure=1.0)
    time.sleep(60)
    return "passed"


def _passes(check):
    return "passed: " + ", ".join(sorted(check.done))


def test_a_part_that_raises_or_overruns_is_recorded_and_the_next_one_runs(tmp_path):
    check = gpu_check.Check(dry_run=True, cuda=False, data_root=None, out=tmp_path, done={})
    for part, box in (
        (gpu_check.Part(1, "raises", "", 5, _raises), 5),
        (gpu_check.Part(2, "overruns", "", 1, _overruns), 3),
    ):
        check.done[part.name] = gpu_check.run_boxed(part, check, box)
    raised, overran = check.done["raises"], check.done["overruns"]
    assert (
        raised["status"] == "error: ValueError: broken on purpose" and "ValueError" in open(raised["traceback"]).read()
    )
    assert overran["status"].startswith("timeout: stopped at its 3 s time box") and overran["seconds"] < 10
    assert overran["rows"] == [{"label": "before the box", "figure": 1.0}]
    assert (
        gpu_check.run_boxed(gpu_check.Part(3, "next", "", 5, _passes), check, 5)["status"] == "passed: overruns, raises"
    )
    assert gpu_check.failed(raised) and gpu_check.failed(overran)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check would run")
def test_without_a_gpu_it_asks_for_one_or_the_dry_run():
    proc = run_script("scripts/gpu_check.py", [])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: no CUDA GPU visible: run `make gpu-check` on a GPU machine, or --dry-run on the CPU"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["data_root=/nonexistent"], "error: data_root=/nonexistent: no train/ folder"),
        (["root=x"], "error: unexpected argument 'root=x'"),
        (["--only", "9"], "error: --only 9: no such part"),
    ],
)
def test_bad_arguments_end_in_one_line(args, message):
    proc = run_script("scripts/gpu_check.py", args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
