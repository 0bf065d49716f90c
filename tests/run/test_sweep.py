"""Multiruns and Optuna sweeps: every family has a search, searches compose and run, the metric is read back, a
sweep whose every job failed exits non-zero."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import REPO, TINY_LINEAR_RUN, assert_succeeded, compose_train, run_script
from omegaconf import OmegaConf

SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))


def test_every_family_has_an_optuna_search():
    families = {
        "contrastive": {"simclr", "mocov2", "moco"},
        "non-contrastive": {"byol", "barlow_twins"},
        "pretext": {"rotnet", "jigsaw", "context_encoder", "colorization"},
        "collapse-free": {"simsiam", "vicreg", "dino"},
    }
    methods = {
        entry["override /method"]
        for s in SEARCHES
        for entry in yaml.safe_load((REPO / "conf/hparams_search" / f"{s}.yaml").read_text())["defaults"]
        if isinstance(entry, dict) and "override /method" in entry
    }
    assert "simclr_optuna" in SEARCHES
    for family, members in families.items():
        assert methods & members, f"no Optuna search for a {family} method in conf/hparams_search"


@pytest.mark.parametrize("search", SEARCHES)
def test_optuna_search_composes(search, tmp_path):
    cfg = compose_train([f"hparams_search={search}"], tmp_path, hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/knn_top1" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{search}: {key} is not a config key"


def test_tiny_optuna_sweep_runs_and_writes_best_params(tmp_path):
    proc = run_script(
        "train.py",
        [
            "-m",
            "hparams_search=simclr_optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            *TINY_LINEAR_RUN,
            "eval.linear=null",
            f"hydra.sweep.dir={tmp_path}",
        ],
    )
    assert_succeeded(proc, "make sweep (tiny)")
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert len(results) == 2 and all(r.get("status") != "failed" for r in results)
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "loss.temperature", "optimizer.weight_decay"}
    # What train.py returned to Optuna: the kNN monitor's val/knn_top1 of each trial.
    assert best["best_value"] == pytest.approx(max(r["metrics"]["val/knn_top1"] for r in results))
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").is_file()
    assert "Optuna best" in (tmp_path / "report.md").read_text()


def test_metric_value_reads_callback_metrics_then_results():
    from selfsup.run.sweep import metric_value

    assert metric_value({"metrics": {"val/knn_top1": 0.5}, "knn_top1": 0.4}, "val/knn_top1") == 0.5
    assert metric_value({"knn_top1": 0.4}, "val/knn_top1") == 0.4
    assert metric_value({"knn_top1": math.nan}, "val/knn_top1") is None
    assert metric_value({"knn_top1": 0.4}, None) is None
