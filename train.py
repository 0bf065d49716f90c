"""Pretrain a self-supervised method: `python train.py method=simclr data=cifar10 trainer.devices=8`.

Composes the Hydra config (conf/train.yaml), trains, evaluates (kNN + linear probe on frozen
features) and writes results.json in the run directory."""

import hydra
from omegaconf import DictConfig

from selfsup.checks import check_train_config
from selfsup.cli import fast_help, one_line_config_errors
from selfsup.config import register_configs
from selfsup.errors import exit_on_user_error
from selfsup.run.sweep import run_job

register_configs()
fast_help()  # --help: examples and the groups to pick from, in a second
one_line_config_errors()  # a typo'd key, unknown option or wrong type: one line, exit 2


def checked_pretrain(cfg: DictConfig) -> dict:
    check_train_config(cfg)  # config mistakes fail in a second, before torch and Lightning load
    from selfsup.run.pipeline import pretrain
    from selfsup.run.plan import plan_run

    return pretrain(plan_run(cfg))  # everything known and checked before anything slow, then fit and record


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return run_job(checked_pretrain, cfg)  # cfg.optimized_metric for a sweeper; a multirun job's failure is recorded


if __name__ == "__main__":
    main()
