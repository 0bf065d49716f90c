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


@dataclass(frozen=True)
class LearningCase:
    overrides: list[str]
    epochs: int = 2
    task_metric: str | None = None   # a pretext task's own accuracy/loss in csv/metrics.csv (mean of the last 3 logs)
    task_lower_is_better: bool = False  # the task metric is a loss (read through `as_score`)
    knn_must_rise: bool = True       # False: the task metric is the learning signal; kNN must only not fall
    knn_may_fall: bool = False       # (with knn_must_rise=False) kNN must only not collapse: not below the
                                     # control's - 0.02 or, if lower, the seeds' own mean - 3 sd


CASES = {
    "simclr": LearningCase(["experiment=simclr_cpu_short"]),
    "mocov2": LearningCase(["experiment=mocov2_cpu_short"]),
    # 2 epochs measured +0.016 at seed 0 (512-d), 3 epochs +0.025.
    "barlow_twins": LearningCase(["experiment=barlow_twins_cpu_short"], epochs=3),
    "rotnet": LearningCase(["experiment=rotnet_cpu_short"], task_metric="train/rotation_acc", knn_must_rise=False),
    "jigsaw": LearningCase(["experiment=jigsaw_cpu_short"], task_metric="train/jigsaw_acc", knn_must_rise=False),
    # The masked-patch loss vs predicting each patch's mean (~0.98 with norm_pix_loss) and the control. 1 epoch:
    # the ViT's kNN embeddings (at init and at the end) cost more than its training; a ViT's kNN falls early
    # in MAE training (0.298 -> 0.253 in 55 steps of 64, docs/cpu_runs.md), so it need only not collapse.
    "mae": LearningCase(["experiment=mae_cpu_short"], epochs=1, task_metric="train/loss", task_lower_is_better=True,
                        knn_must_rise=False, knn_may_fall=True),
    # 2 epochs measured +0.028 at seed 0 (docs/cpu_runs.md), at the floor of control + 0.02.
    "mocov3": LearningCase(["experiment=mocov3_cpu_short"], epochs=3),
    # benchmarks/steps_to_learn.py (12-epoch schedule, seed 0): +0.025 at 78 steps, +0.049 at 197. 4 epochs
    # were not better at seed 0 (+0.017 vs 3 epochs' +0.025; seed 1 +0.040 vs +0.041).
    "vicreg": LearningCase(["experiment=vicreg_cpu_short"], epochs=3),
    # The hole's reconstruction loss vs filling it with the mean colour; the kNN must not fall beyond noise.
    "context_encoder": LearningCase(["experiment=context_encoder_cpu_short"], task_metric="train/reconstruction_loss",
                                    task_lower_is_better=True, knn_must_rise=False),
    # Not a case: colorization (colorization_cpu_short: at 2 epochs its loss, 0.0078, had not reached the
    # mean colour's 0.0069; docs/cpu_runs.md).
}


def as_score(case: LearningCase, value: float) -> float:
    """The task metric as a score, higher is better (a loss negated): the one place its direction is read.
    Calibration takes mean - 3 sd of scores, and the tests compare scores (run vs threshold vs control and
    trivial baseline), so a loss's threshold is mean + 3 sd and must lie below the control's loss."""
    return -value if case.task_lower_is_better else value


def command(name: str, data_root, seed: int, control: bool = False) -> list[str]:
    case = CASES[name]
    return [*case.overrides, f"data.root={data_root}", f"seed={seed}", f"trainer.max_epochs={case.epochs}", *BUDGET,
            *(NO_LEARNING if control else [])]


def calibration() -> dict:
    return json.loads(CALIBRATION.read_text()) if CALIBRATION.is_file() else {}
