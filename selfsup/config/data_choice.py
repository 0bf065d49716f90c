"""eval.data: the labelled data a run is scored on instead of its pretraining data (data=images has no
labels), named on the command line as a data config (`eval.data=cifar10`: conf/data/cifar10.yaml as
`data=cifar10` composes it) or as the root of a labelled image folder (`eval.data=/path`: data=folder
with that root). Torch-free: the checks resolve it before torch loads."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selfsup.config.data import DataConfig

DATA_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "data"


def data_config(choice: str, paths) -> DictConfig:
    """The data config `choice` names, resolved against `paths` (the run's paths group)."""
    path = DATA_CONFIGS / f"{choice}.yaml"
    node = (
        _load(path) if path.is_file() else OmegaConf.merge(_load(DATA_CONFIGS / "folder.yaml"), {"root": str(choice)})
    )
    known = {"root_dir": paths.root_dir, "data_dir": paths.data_dir}  # (output_dir resolves inside a Hydra job only)
    with_paths = OmegaConf.create({"paths": known, "data": node})
    return OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.to_container(with_paths, resolve=True)["data"])


def _load(path: Path) -> DictConfig:
    """A conf/data YAML without its defaults list, over the one it extends (imagenet100: imagenet)."""
    node = OmegaConf.load(path)
    bases = [b for b in node.pop("defaults", []) if isinstance(b, str) and not b.startswith(("/", "_"))]
    return OmegaConf.merge(*(_load(path.parent / f"{b}.yaml") for b in bases), node)
