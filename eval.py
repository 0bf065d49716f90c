"""Evaluate a pretrained checkpoint, or other weights, on frozen features:
`python eval.py ckpt_path=...|weights=... [data=...|eval.data=...] [eval=...]`.

Without `data=` (or `eval.data=`) the checkpoint's own pretraining data is used; with it, the backbone is
evaluated on another dataset (transfer). Writes results.json in the run directory."""

import hydra
from omegaconf import DictConfig

from selfsup.cli import fast_help, one_line_config_errors
from selfsup.config import register_configs
from selfsup.errors import exit_on_user_error
from selfsup.run.sweep import run_job

register_configs()
fast_help()  # --help: examples and the groups to pick from, in a second
one_line_config_errors()  # a typo'd key, unknown option or wrong type: one line, exit 2


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    # torch and Lightning load after Hydra parsed the args (--help)
    from selfsup.run.pipeline import evaluate_checkpoint

    return run_job(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    main()
