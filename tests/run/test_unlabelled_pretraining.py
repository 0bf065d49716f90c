"""Pretraining on your own unlabelled images through train.py (issue 25): data=images on a nested tree of mixed
formats and sizes without labels or val split; results.json, the final line and the label-free pictures; eval.data
for kNN and linear scores; 2 CPU ranks; a kill -9 and the same command again; a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import assert_succeeded, run_script, train
from safetensors.torch import save_file

from selfsup.models.backbones import build_backbone

IMAGES = [
    "data=images",
    "data.resolution=16",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "method.projector.hidden_dim=64",
    "method.projector.output_dim=32",
]
PICTURES = {"views.png", "neighbours.png", "embedding.png", "curves.png"}


def _logged(run_dir: Path) -> set[str]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return {key for row in csv.DictReader(f) for key, value in row.items() if value}


def test_an_unlabelled_tree_trains_to_results_pictures_and_a_final_line(tree, tmp_path):
    """Warm-started from a state dict file (weights=), which results.json records."""
    start = build_backbone("resnet18", cifar_stem=True)
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(tmp_path / "start.safetensors"))
    run_dir = tmp_path / "run"
    proc = run_script(
        "train.py",
        ["method=simclr", f"data.root={tree}", *IMAGES, f"weights={tmp_path / 'start.safetensors'}"],
        run_dir,
    )
    assert_succeeded(proc, "train.py data=images")
    results = json.loads((run_dir / "results.json").read_text())
    assert "eval.data" in results["eval_skipped"] and "no labels" in results["eval_skipped"]
    assert "knn_top1" not in results and results["knn_top1_at_init"] is None
    assert results["steps"] == 2 and results["images_seen"] == 16 == 2 * results["global_batch_size"]
    assert results["weights"]["kind"] == "file" and results["weights"]["path"] == str(tmp_path / "start.safetensors")
    lines = proc.stdout.splitlines()
    final = next(line for line in lines if line.startswith("final:"))
    assert f"train/loss {results['metrics']['train/loss']:.4f} after 2 steps, 16 images seen" in final
    assert lines[-1] == f"results: {run_dir / 'results.json'}"
    assert {p.name for p in (run_dir / "images").iterdir()} == PICTURES
    logged = _logged(run_dir)  # no probe, no monitor: nothing to score them on
    assert "train/loss" in logged and not any(k.startswith("val/") or "online_linear" in k for k in logged)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]  # no best-by-kNN epoch


def test_with_eval_data_the_run_reports_knn_and_linear_on_it(tree, labelled, tmp_path):
    run_dir = tmp_path / "run"
    results = train(["method=simclr", f"data.root={tree}", *IMAGES, f"eval.data={labelled}", "images=false"], run_dir)
    assert results["eval_data"] == str(labelled) and "eval_skipped" not in results
    for key in ("knn_top1", "knn_top1_at_init", "linear_top1"):
        assert 0 < results[key] <= 1, key
    assert "val/knn_top1" in _logged(run_dir)  # the monitor runs on eval.data's splits
    # eval.py on the checkpoint scores the same backbone on the same data: the run's own scores
    proc = run_script(
        "eval.py",
        [f"ckpt_path={results['checkpoint']}", "trainer.precision=32-true", "images=false"],
        tmp_path / "eval",
    )
    assert_succeeded(proc, "eval.py")
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["pretrain_data"] == "images" and again["data"] == "folder"
    assert again["knn_top1"] == results["knn_top1"] and again["linear_top1"] == results["linear_top1"]


def test_two_cpu_ranks_train_on_it(tree, labelled, tmp_path):
    results = train(
        [
            "method=simclr",
            f"data.root={tree}",
            *IMAGES,
            f"eval.data={labelled}",
            "images=false",
            "eval.linear=null",
            "eval.knn_at_init=false",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "strategy=ddp_spawn",
        ],
        tmp_path,
    )
    assert results["global_batch_size"] == 16 and results["images_seen"] == 32 and 0 < results["knn_top1"] <= 1
    assert len(list(tmp_path.rglob("results.json"))) == 1


def test_killed_the_same_command_resumes_it(tree, tmp_path):
    from run.test_failures import _kill_9_after_checkpoints  # the kill -9 harness of the reliability tests

    args = [
        "method=mocov2",
        "method.queue_size=64",
        f"data.root={tree}",
        *[a for a in IMAGES if not a.startswith(("trainer.max_epochs", "++trainer.limit_train"))],
        "trainer.max_epochs=3",
        "++trainer.limit_train_batches=3",
        "callbacks.last.every_n_steps=2",
        "images=false",
    ]
    runs = tmp_path / "runs"
    runs.mkdir()
    first = runs / "2026-01-01_00-00-00"
    killed = _kill_9_after_checkpoints(args, first, count=2)
    assert 4 <= killed["global_step"] < 9
    proc = run_script("train.py", args, runs / "2026-01-01_00-05-00")
    assert_succeeded(proc, "train.py, again")
    assert f"resuming {first}" in proc.stdout
    results = json.loads((first / "results.json").read_text())
    assert results["resumed_from"]["global_step"] == killed["global_step"] and results["steps"] == 9
    assert results["images_seen"] == 72 and "eval_skipped" in results


def test_a_sweep_over_it_writes_one_result_per_job(tree, tmp_path):
    proc = run_script(
        "train.py",
        [
            "-m",
            "method=simclr",
            f"data.root={tree}",
            *IMAGES,
            "images=false",
            "seed=1,2",
            f"hydra.sweep.dir={tmp_path}",
        ],
    )
    assert_succeeded(proc, "train.py -m data=images")
    jobs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("results.json"))]
    assert [job["seed"] for job in jobs] == [1, 2] and all("eval_skipped" in job for job in jobs)
    assert jobs[0]["metrics"]["train/loss"] != jobs[1]["metrics"]["train/loss"]
