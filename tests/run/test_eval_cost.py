"""The cost of evaluation is proportional: the kNN monitor's cadence (trainer.check_val_every_n_epoch=auto)
and the time split results.json reports."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import TINY_RUN, train
from omegaconf import OmegaConf

from selfsup.run.plan import MONITOR_SHARE, monitor_interval


def _interval(every, max_epochs, train_images, bank, val, views=2, knn_bank_size=None) -> int:
    cfg = OmegaConf.create(
        {
            "trainer": {"check_val_every_n_epoch": every, "max_epochs": max_epochs},
            "data": {"knn_bank_size": knn_bank_size},
            "augmentation": {"views": [{}] * views},
        }
    )
    datamodule = SimpleNamespace(pretrain=range(train_images), labelled=range(bank), val=range(val))
    return monitor_interval(cfg, datamodule)


@pytest.mark.parametrize("max_epochs, expected", [(3, 3), (8, 4), (100, 4), (7, 7), (1, 1), (-1, 4)])
def test_auto_monitor_costs_about_five_percent_and_always_sees_the_last_epoch(max_epochs, expected):
    # The CIFAR sample: (5,085 + 1,017) embedded vs 3 x 5,085 x 2 views trained per epoch = 20% -> every 4 epochs,
    # at an interval dividing the run, so that the last epoch (whose features the final evaluation reuses) is one.
    every = _interval("auto", max_epochs, 5085, 5085, 1017)
    assert every == expected
    assert (6102 / every) / (3 * 5085 * 2) <= MONITOR_SHARE or every == max_epochs


def test_monitor_interval_follows_the_bank_cap_and_an_explicit_value():
    assert _interval("auto", 100, 1_281_167, 1_281_167, 50_000, knn_bank_size=50_000) == 1  # ImageNet, capped bank
    assert _interval(2, 8, 5085, 5085, 1017) == 2


def test_results_say_where_the_seconds_went(tmp_path):
    results = train(
        ["data=digits", *TINY_RUN, "trainer.max_epochs=2", "++trainer.limit_val_batches=1.0", "eval.knn_at_init=true"],
        tmp_path,
    )
    seconds = results["seconds"]
    assert {"init_eval", "training", "monitor", "final_eval", "total"} <= seconds.keys()
    assert seconds["monitor"] > 0  # the last epoch is always monitored
    assert seconds["training"] + seconds["monitor"] == pytest.approx(results["train_seconds"], abs=0.02)
    evaluating = seconds["init_eval"] + seconds["monitor"] + seconds["final_eval"]
    rounding = 4 * 0.005 / seconds["total"]  # results.json rounds each of the four seconds to 0.01
    assert results["eval_fraction"] == pytest.approx(evaluating / seconds["total"], abs=rounding + 1e-4)
    assert results["knn_top1"] == pytest.approx(results["metrics"]["val/knn_top1"], abs=1e-6)  # reused, exact
