"""The learning tests' runs, defined once: the tests (`-m learning`) and tests/calibrate_learning.py,
which measures each over seeds plus a no-learning control and writes the thresholds the tests use
(tests/learning_calibration.json), both run exactly these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CALIBRATION = Path(__file__).with_name("learning_calibration.json")

# The suite's budget on top of each recipe: `epochs` of the CIFAR sample (39 steps each at batch 128).
BUDGET = ["trainer.enable_progress_bar=false", "resume=never"]  # never continue another unfinished run
# lr ~ 0: BatchNorm running statistics still adapt to the data, so the kNN of the untouched weights moves
# too; a learning test's gain has to come from learning, i.e. stand clear of this control's.
NO_LEARNING = ["optimizer.lr=1e-9"]
# Never below this gain, whatever the seeds say: the standard error of top-1 on the 1,017 val images is ~0.014.
MIN_KNN_GAIN = 0.02
# A calibration holds only over this many seeds: with 3, mean - 3 sd rests on a standard deviation of 2 degrees
# of freedom, itself uncertain by ~50%.
MIN_SEEDS = 5
# Another machine's numerics move a run as another seed does, and 5 seeds can give an implausibly small spread
# (MoCo v3 at 6 epochs: 0.0008, under one of the 1,017 val images): a kNN threshold never rests on less.
MIN_KNN_SD = 0.005


@dataclass(frozen=True)
class LearningCase:
    overrides: list[str]
    epochs: int = 2
    task_metric: str | None = None  # a pretext task's own accuracy/loss in csv/metrics.csv (mean of the last 3 logs)
    task_lower_is_better: bool = False  # the task metric is a loss (read through `as_score`)
    knn_must_rise: bool = True  # False: the task metric is the learning signal; kNN must only not fall
    knn_may_fall: bool = False  # (with knn_must_rise=False) kNN must only not collapse: not below the
    # control's - 0.02 or, if lower, the seeds' own mean - 3 sd
    task_margin: float = 0.02  # the task threshold must clear the control and the trivial baseline by this
    slow: bool = False  # its budget does not fit the suite: marker slow_learning (-m slow_learning)


def loss_case(recipe: str, epochs: int, knn_may_fall: bool = False) -> LearningCase:
    """A case whose learning signal is the method's own training loss (`train/loss`) against its trivial baseline
    (tests/calibrate_learning.py BASELINES); its budget is beyond the suite's (slow_learning)."""
    return LearningCase(
        [f"experiment={recipe}"],
        epochs=epochs,
        task_metric="train/loss",
        task_lower_is_better=True,
        knn_must_rise=False,
        knn_may_fall=knn_may_fall,
        slow=True,
    )


CASES = {
    # 2 epochs: +0.055 +- 0.011 over 5 seeds, mean - 3 sd +0.023 short of control + 0.02 (+0.026).
    "simclr": LearningCase(["experiment=simclr_cpu_short"], epochs=3),
    # 4 epochs: +0.078 +- 0.021 over 5 seeds, refused (mean - 3 sd +0.016; one high seed widens the spread).
    # 6 epochs (~3.5 min a run alone) hold; beyond the suite's budget.
    "mocov2": LearningCase(["experiment=mocov2_cpu_short"], epochs=6, slow=True),
    # Its own loss vs an embedding blind to the image (C = 0: the loss is D), and kNN must not fall beyond noise.
    # Its kNN gain is slow and narrow here: 3 epochs +0.024 +- 0.008 over 5 seeds, 6 epochs +0.023 and +0.027
    # at seeds 0 and 1 (refused either way); the atlas has its kNN climb (+0.048 at 16 epochs).
    "barlow_twins": loss_case("barlow_twins_cpu_short", epochs=3),
    "rotnet": LearningCase(["experiment=rotnet_cpu_short"], task_metric="train/rotation_acc", knn_must_rise=False),
    "jigsaw": LearningCase(["experiment=jigsaw_cpu_short"], task_metric="train/jigsaw_acc", knn_must_rise=False),
    # The masked-patch loss vs predicting each patch's mean (~0.98 with norm_pix_loss) and the control. 1 epoch:
    # the ViT's kNN embeddings (at init and at the end) cost more than its training; a ViT's kNN falls early
    # in MAE training (0.298 -> 0.253 in 55 steps of 64, docs/cpu_runs.md), so it need only not collapse. Those
    # embeddings make it the costliest case (103 s in a fresh-clone suite of 27 min): slow_learning.
    "mae": loss_case("mae_cpu_short", epochs=1, knn_may_fall=True),
    # 3 epochs: +0.037 +- 0.016 over 3 seeds (refused).
    "mocov3": LearningCase(["experiment=mocov3_cpu_short"], epochs=6, slow=True),
    # The 2048-2048 expander (8-epoch schedule, seed 0): +0.070 at 99 steps, +0.096 at 204. With the former
    # 512-512-512 one, 6 epochs gave +0.056 +- 0.013 over 5 seeds: refused (mean - 3 sd +0.016).
    "vicreg": LearningCase(["experiment=vicreg_cpu_short"], epochs=4, slow=True),
    # The hole's reconstruction loss vs filling it with the mean colour; the kNN must not fall beyond noise.
    "context_encoder": LearningCase(
        ["experiment=context_encoder_cpu_short"],
        task_metric="train/reconstruction_loss",
        task_lower_is_better=True,
        knn_must_rise=False,
    ),
    # The class-rebalanced cross-entropy vs predicting the colour prior everywhere (the trivial baseline); kNN on
    # the lightness input must not fall beyond noise. 8 epochs of the recipe's 24 (~2 min alone): its task is
    # learnt by then, its kNN only climbs past init + 0.03 later (the atlas). Beyond the suite's budget.
    "colorization": loss_case("colorization_cpu_short", epochs=8),
    # benchmarks/steps_to_learn.py (16-epoch schedule, seed 0): +0.036 at 172 steps, +0.059 at 213; 6 epochs of
    # their own schedule measured +0.026 at seed 0. 10 epochs (~5 min alone) do not fit the suite.
    "nnclr": LearningCase(["experiment=nnclr_cpu_short"], epochs=10, slow=True),
    # The recipe's whole schedule (~11 min a run alone): its kNN dips first and climbs past init + 0.03 after ~600
    # steps. Refused: +0.030, +0.035, +0.054 at seeds 0-2 (control -0.008); whatever seeds 3-4 give, mean - 3 sd
    # stays at or below +0.014, under MIN_KNN_GAIN, so the calibration stopped there.
    "byol": LearningCase(["experiment=byol_cpu_short"], epochs=25, slow=True),
    # Uncalibrated, and no calibration of their whole schedules could hold: their kNN gains are below
    # MIN_KNN_GAIN itself, whatever the spread. DINO (12 epochs): +0.014 (the atlas, seed 0), +0.026 and +0.013
    # (the peer table, seeds 0-1); SimSiam (25 epochs): +0.003 (the atlas, seed 0), -0.026 +- 0.015 at 300 s
    # (the peer table, seeds 0-1). docs/cpu_runs.md has what was tried.
    "dino": LearningCase(["experiment=dino_cpu_short"], epochs=12, slow=True),
    "simsiam": LearningCase(["experiment=simsiam_cpu_short"], epochs=25, slow=True),
    # The swapped-prediction loss vs the best prediction that knows nothing of the image (uniform over the K
    # prototypes, ln K, the codes being equipartitioned): the task is learnt within 4 epochs (2 with the queue).
    # Its kNN dips first (0.306 -> 0.259 at step 173, seed 0) and climbs past init + 0.03 only at step 1227 of
    # 40 epochs (the atlas, ~10 min alone), so here it must only not collapse.
    "swav": loss_case("swav_cpu_short", epochs=4, knn_may_fall=True),
}


def as_score(case: LearningCase, value: float) -> float:
    """The task metric as a score, higher is better (a loss negated): the one place its direction is read.
    Calibration takes mean - 3 sd of scores, and the tests compare scores (run vs threshold vs control and
    trivial baseline), so a loss's threshold is mean + 3 sd and must lie below the control's loss."""
    return -value if case.task_lower_is_better else value


def knn_gain_low(mean: float, sd: float) -> float:
    """mean - 3 sd of the seeds' kNN gains, the spread never below MIN_KNN_SD."""
    return mean - 3 * max(sd, MIN_KNN_SD)


def refusal(name: str, calibrated: dict) -> str | None:
    """Why a case's calibration does not hold (None: it holds), the one place this rule is written.
    It holds when, over at least MIN_SEEDS seeds, mean - 3 sd of the learning signal clears the no-learning
    control by a margin: for a kNN gain (sd at least MIN_KNN_SD) max(MIN_KNN_GAIN, control + MIN_KNN_GAIN); for a
    task metric (as a score) the control's and the trivial baseline's by `task_margin`, with every seed's kNN
    at or above its floor. A test of a case that does not hold is refused, never asserted at a floor."""
    case, runs = CASES[name], calibrated.get("runs", [])
    if "control" not in calibrated or len(runs) < MIN_SEEDS:
        return (
            f"calibrated over {len(runs)} seeds{'' if 'control' in calibrated else ' and no control'}, "
            f"needs {MIN_SEEDS} and the lr ~ 0 control: tests/calibrate_learning.py --cases {name}"
        )
    if case.knn_must_rise:
        floor = max(MIN_KNN_GAIN, calibrated["control"]["knn_gain"] + MIN_KNN_GAIN)
        low = knn_gain_low(calibrated["knn_gain_mean"], calibrated["knn_gain_sd"])
        return (
            None
            if low >= floor
            else (
                f"kNN gain mean - 3 sd {low:+.4f} does not clear {floor:+.4f} "
                f"(max of {MIN_KNN_GAIN} and the control + {MIN_KNN_GAIN}) at {case.epochs} epochs"
            )
        )
    threshold = as_score(case, calibrated["task_threshold"])
    rivals = [("control", calibrated["task_control"]), ("trivial baseline", calibrated.get("task_baseline"))]
    for rival, value in rivals:
        if value is not None and threshold < as_score(case, value) + case.task_margin:
            return (
                f"{case.task_metric} threshold {calibrated['task_threshold']:.4f} is within {case.task_margin} "
                f"of the {rival}'s {value:.4f}"
            )
    lowest = min(r["knn_gain"] for r in runs)
    if lowest < calibrated["knn_gain_threshold"]:
        return f"a seed's kNN gain {lowest:+.4f} is below the floor {calibrated['knn_gain_threshold']:+.4f}"
    return None


def command(name: str, data_root, seed: int, control: bool = False) -> list[str]:
    case = CASES[name]
    return [
        *case.overrides,
        f"data.root={data_root}",
        f"seed={seed}",
        f"trainer.max_epochs={case.epochs}",
        *BUDGET,
        *(NO_LEARNING if control else []),
    ]


def calibration() -> dict:
    return json.loads(CALIBRATION.read_text()) if CALIBRATION.is_file() else {}
