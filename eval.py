"""Evaluate a pretrained checkpoint on frozen features: `python eval.py ckpt_path=... [data=...] [eval=...]`.

Without `data=` the checkpoint's own pretraining data is used; with it, the backbone is
evaluated on another dataset (transfer). Writes results.json in the run directory."""
import hydra
from omegaconf import DictConfig

from selfsup.config import register_configs
from selfsup.errors import exit_on_user_error
from selfsup.pipeline import evaluate_checkpoint

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate_checkpoint(cfg)


if __name__ == "__main__":
    main()
