"""The generic config checks that a schema cannot express, run by train.py before torch and
Lightning load, so a mistake costs a second and one line instead of a crash on day two.

Torch-free on purpose. What needs torch, the data or the world size is checked by the run layer
(selfsup/run/launch.py); a method's own rules live in its `check_config` classmethod.
One concern per file: `train.py` (what train.py runs, in order, and the recipe warning),
`config.py` (schema keys, unset values, ranges, run options), `data.py` (data root, normalisation),
`devices.py` (devices, precision, CPU processes, the recipe's global batch); W&B's key:
selfsup/wandb_mode.py."""

from selfsup.checks.config import check_eval_options, resume_enabled
from selfsup.checks.data import eval_data
from selfsup.checks.devices import check_global_batch, requested_devices
from selfsup.checks.train import check_inputs, check_train_config, recipe_warning

__all__ = [
    "check_eval_options",
    "check_global_batch",
    "eval_data",
    "check_inputs",
    "check_train_config",
    "recipe_warning",
    "requested_devices",
    "resume_enabled",
]
