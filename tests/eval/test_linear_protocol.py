"""eval.py on a CIFAR checkpoint: the standard linear protocol, and the fast probe that says it is one (low-shot
takes 10% of each class)."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_RUN, run_script, train


@pytest.fixture(scope="module")
def cifar_checkpoint(tmp_path_factory) -> str:
    """A tiny SimCLR run on the CIFAR sample (2 steps at 32 px): its checkpoint, for eval.py."""
    from conftest import CIFAR_SUBSET

    if not (CIFAR_SUBSET / "train").is_dir():
        pytest.skip(f"the CIFAR sample is not at {CIFAR_SUBSET}")
    run_dir = tmp_path_factory.mktemp("tiny_cifar_run")
    results = train(
        ["method=simclr", "data=folder", f"data.root={CIFAR_SUBSET}", "data.resolution=32", *TINY_RUN, "images=false"],
        run_dir,
    )
    return results["checkpoint"]


def _eval_py(args: list[str], run_dir) -> dict:
    proc = run_script("eval.py", [*args, "trainer.precision=32-true"], run_dir)
    assert proc.returncode == 0, f"eval.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((run_dir / "results.json").read_text())


def test_eval_py_runs_the_standard_linear_protocol(cifar_checkpoint, tmp_path):
    results = _eval_py(
        [f"ckpt_path={cifar_checkpoint}", "eval=linear_standard", "eval.linear_standard.epochs=1"], tmp_path
    )
    assert results["linear_protocol"] == "standard" and results["linear_epochs"] == 1
    assert 0 <= results["linear_top1"] <= results["linear_top5"] <= 1
    assert 0 <= results["knn_top1"] <= results["knn_top5"] <= 1


def test_the_fast_probe_says_it_is_the_probe_and_low_shot_uses_10_percent_of_each_class(cifar_checkpoint, tmp_path):
    from conftest import CIFAR_SUBSET

    per_class = [len(list(d.iterdir())) for d in sorted((CIFAR_SUBSET / "train").iterdir())]
    results = _eval_py(
        [
            f"ckpt_path={cifar_checkpoint}",
            "eval=linear",
            "eval.label_fraction=0.1",
            "eval.linear.weight_decays=[1.0e-4]",
            "eval.linear.max_iter=20",
        ],
        tmp_path,
    )
    assert results["linear_protocol"] == "probe_lbfgs" and "linear_top5" in results
    assert results["label_fraction"] == 0.1
    assert results["labelled_images"] == sum(round(0.1 * n) for n in per_class)
