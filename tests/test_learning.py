"""Learning on real images (`-m learning`): each method's short CPU recipe (conf/experiment/*_cpu_short.yaml)
for the suite's budget (tests/learning_cases.py) on the CIFAR-10 sample, asserted against thresholds
measured over 5 seeds with a no-learning control (lr ~ 0) by tests/calibrate_learning.py and stored,
with every figure, in tests/learning_calibration.json.

A case runs only if its calibration holds (learning_cases.refusal: at least 5 seeds, mean - 3 sd clear of
the control by a margin); otherwise the test is refused (skipped with the reason), never asserted at a
floor. Cases whose calibrated budget does not fit the suite carry the slow_learning marker instead.

SSL methods: the kNN top-1 gain over init must reach max(0.02, control + 0.02, mean - 3 sd), the sd never taken
below 0.005 (learning_cases.MIN_KNN_SD). Pretext
tasks: the task's own metric must reach mean - 3 sd (above the control's), and the kNN must not fall
below the control's gain by more than 0.02 (BatchNorm re-estimated on tiles / rotations moves it alone),
or, where it may fall in this budget (MAE's ViT), must not collapse: not below that or, if lower, the
seeds' own mean - 3 sd.
A task metric that is a loss (MAE, context encoder, colorization, SwAV, Barlow Twins) must end at or below
mean + 3 sd, a threshold that itself lies below the control's loss and the trivial baseline's (predicting the
mean; SwAV: uniform over its prototypes; Barlow Twins: one embedding for every image).
"""

from __future__ import annotations

import csv
from functools import partial

import pytest
from conftest import train
from learning_cases import CASES, MIN_KNN_GAIN, MIN_KNN_SD, as_score, calibration, command, refusal

CALIBRATED = calibration()
SEED = 0


def last_logged(run_dir, key: str, count: int = 3) -> float:
    with open(run_dir / "csv" / "metrics.csv") as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    return sum(values[-count:]) / len(values[-count:])


def case_param(name: str):
    reason = refusal(name, CALIBRATED.get(name, {}))
    marks = [pytest.mark.slow_learning if CASES[name].slow else pytest.mark.learning]
    if reason is not None:
        marks.append(pytest.mark.skip(reason=f"refused, calibration does not hold: {reason}"))
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [case_param(name) for name in CASES])
def test_learns_on_real_images(name, tmp_path, cifar_subset):
    case, calibrated = CASES[name], CALIBRATED[name]
    results = train(command(name, cifar_subset, SEED), tmp_path)
    gain = results["knn_top1"] - results["knn_top1_at_init"]
    measured = (
        f"calibrated {calibrated['knn_gain_mean']:+.4f} +- {calibrated['knn_gain_sd']:.4f} "
        f"over {len(calibrated['runs'])} seeds"
    )
    print(
        f"{name}: kNN top-1 {results['knn_top1_at_init']:.4f} -> {results['knn_top1']:.4f} ({gain:+.4f}; {measured}), "
        f"{results['train_seconds']:.0f} s of training"
    )
    assert gain >= calibrated["knn_gain_threshold"], f"{name}: kNN gain {gain:+.4f} ({measured})"
    if case.knn_must_rise:
        assert gain >= MIN_KNN_GAIN
    if case.task_metric:
        task, threshold = last_logged(tmp_path, case.task_metric), calibrated["task_threshold"]
        baseline = calibrated.get("task_baseline")
        print(
            f"{name}: {case.task_metric} {task:.4f} (calibrated {calibrated['task_mean']:.4f} +- "
            f"{calibrated['task_sd']:.4f}, threshold {threshold:.4f}, lr ~ 0: {calibrated['task_control']:.4f}"
            + ("" if baseline is None else f", predicting the mean: {baseline:.4f}")
            + ")"
        )
        score = partial(as_score, case)  # higher is better: a loss negated
        assert score(task) >= score(threshold) > score(calibrated["task_control"]), (
            f"{name}: {case.task_metric} {task:.4f} vs threshold {threshold:.4f}"
        )
        assert baseline is None or score(threshold) > score(baseline), f"{name}: threshold {threshold:.4f} vs baseline"


def test_a_knn_threshold_never_rests_on_a_spread_below_the_minimum():
    seeds = [{"knn_gain": 0.03}] * 5
    narrow = {"control": {"knn_gain": 0.0}, "runs": seeds, "knn_gain_mean": 0.03, "knn_gain_sd": 0.0001}
    assert 0.03 - 3 * 0.0001 >= MIN_KNN_GAIN  # would hold on the seeds' own spread
    assert "does not clear" in refusal("simclr", narrow)
    clear = {**narrow, "knn_gain_mean": MIN_KNN_GAIN + 3 * MIN_KNN_SD + 0.001}
    assert refusal("simclr", clear) is None
