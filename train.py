"""Pretrain a self-supervised method: `python train.py method=simclr data=cifar10 trainer.devices=8`.

Composes the Hydra config (conf/train.yaml), trains, evaluates (kNN + linear probe on frozen
features) and writes results.json in the run directory."""
import hydra
from omegaconf import DictConfig

from selfsup.config import register_configs
from selfsup.errors import exit_on_user_error
from selfsup.pipeline import pretrain

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    pretrain(cfg)


if __name__ == "__main__":
    main()
