"""Backbone weights from outside this project's checkpoints (`weights=`): what eval.py evaluates and
train.py warm-starts from. Four forms, each found locally and never downloaded:
* a file: a `.safetensors` or `.pt`/`.pth`/`.bin` state dict (scripts/export.py writes one; a whole
  torchvision or timm model's, classifier included, loads too: the classifier is dropped);
* a torchvision weight name, `<model>.<weights>` (resnet50.IMAGENET1K_V2), from the torch hub cache;
* a timm name, `timm/<model>.<tag>` (timm/resnet50.a1_in1k), from the Hugging Face or torch hub cache;
* `random`: the backbone's random initialisation (the baseline every SSL paper reports).
A named weight missing from its cache stops with the exact place to put the file."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.models.backbones import RESNETS

FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
TORCHVISION_NAME = re.compile(r"^(?P<model>[a-z][a-z0-9_]*)\.(?P<weights>[A-Z][A-Z0-9_]*)$")
FORMS = (
    "a .safetensors/.pt state dict file",
    "a torchvision weight name such as resnet50.IMAGENET1K_V2",
    "a timm name such as timm/resnet50.a1_in1k",
    "random",
)
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head.fc.")  # torchvision's and timm's classifiers


@dataclass(frozen=True)
class Weights:
    """Where a backbone's weights come from (results.json records it as `weights`)."""

    spec: str  # as given: weights=<spec>
    kind: str  # file | torchvision | timm | random
    path: Optional[str] = None  # the file read
    backbone: Optional[str] = None  # the backbone they fit, where the weights say (backbone.name)
    backbone_config: Optional[dict] = None  # the whole backbone config, where the file records it (export.py)
    resolution: Optional[int] = None  # the resolution they were trained at, where the file records it

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def find_weights(spec: str) -> Weights:
    """`spec` located (the file, the cache entry) without reading the weights; one line if it cannot be."""
    spec = str(spec).strip()
    if spec == "random":
        return Weights(spec, "random")
    if spec.startswith("timm/"):
        return _timm_weights(spec)
    if spec.lower().endswith(FILE_SUFFIXES) or "/" in spec:
        return _file_weights(spec)
    if TORCHVISION_NAME.match(spec):
        return _torchvision_weights(spec)
    raise UserError(f"weights={spec} is none of the forms weights= takes: {'; '.join(FORMS)}")


def _file_weights(spec: str) -> Weights:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(
            f"weights={spec}: no such file; pass {FORMS[0]} (scripts/export.py writes backbone.safetensors)"
        )
    if path.suffix == ".ckpt" or not path.name.lower().endswith(FILE_SUFFIXES):
        raise UserError(
            f"weights={spec} is not a state dict file ({', '.join(FILE_SUFFIXES)}); a checkpoint of this "
            "project is ckpt_path="
        )
    config, resolution = None, None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise UserError(f"weights={spec} is not a readable safetensors file ({err})") from None
        config = json.loads(metadata["backbone_config"]) if "backbone_config" in metadata else None
        if config is None and metadata.get("backbone"):
            config = {"name": metadata["backbone"]}
        resolution = int(metadata["resolution"]) if metadata.get("resolution", "None").isdigit() else None
    return Weights(spec, "file", str(path.resolve()), (config or {}).get("name"), config, resolution)


def _torchvision_weights(spec: str) -> Weights:
    import torchvision

    model, name = TORCHVISION_NAME.match(spec).group("model", "weights")
    if model not in RESNETS:
        raise UserError(
            f"weights={spec}: torchvision weights load into the backbones this project builds from "
            f"torchvision, {', '.join(RESNETS)}; for others use a timm name (timm/<model>.<tag>)"
        )
    try:
        entry = torchvision.models.get_model_weights(model)[name]
    except KeyError:
        known = ", ".join(f"{model}.{w.name}" for w in torchvision.models.get_model_weights(model))
        raise UserError(f"weights={spec}: torchvision has no such weights; it has {known}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not cached.is_file():
        raise UserError(
            f"weights={spec} is not in the local torch hub cache and runs never download: put "
            f"{Path(entry.url).name} (from {entry.url}) at {cached}"
        )
    return Weights(spec, "torchvision", str(cached), model)


def _timm_weights(spec: str) -> Weights:
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    model = spec.removeprefix("timm/")
    config = timm.models.get_pretrained_cfg(model)
    if config is None:
        raise UserError(f"weights={spec}: timm has no pretrained weights named {model} (timm.list_pretrained())")
    architecture = config.architecture or model.partition(".")[0]
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(config.hf_hub_id, filename) if config.hf_hub_id else None
        if isinstance(cached, str):
            return Weights(spec, "timm", cached, f"timm/{architecture}")
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(config.url).name if config.url else None
    if hub_file is not None and hub_file.is_file():
        return Weights(spec, "timm", str(hub_file), f"timm/{architecture}")
    places = []
    if hub_file is not None:
        places.append(f"put {hub_file.name} (from {config.url}) at {hub_file}")
    if config.hf_hub_id:
        places.append(
            f"run `huggingface-cli download {config.hf_hub_id} model.safetensors` on a machine with network "
            f"and copy what it writes under {Path(constants.HF_HUB_CACHE) / ('models--' + config.hf_hub_id.replace('/', '--'))}"
        )
    raise UserError(f"weights={spec} is not in the local caches and runs never download: {', or '.join(places)}")


def check_backbone(weights: Weights, name: str) -> None:
    """Weights that name their architecture load into that backbone only."""
    if weights.backbone and name != weights.backbone:
        raise UserError(
            f"weights={weights.spec} are a {weights.backbone}'s, not a {name}'s: pass backbone="
            + (weights.backbone if weights.backbone in RESNETS else f"<any> backbone.name={weights.backbone}")
        )


def read_state(weights: Weights) -> dict:
    """The state dict in the weights' file; a `backbone.`-prefixed one (a training module's) unprefixed."""
    path = weights.path
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch and safetensors raise many types for a damaged file
        raise UserError(
            f"weights={weights.spec}: cannot read {path} ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights={weights.spec}: {path} holds no state dict (name -> tensor)")
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


def load_weights(backbone: nn.Module, weights: Weights) -> None:
    """`weights` into `backbone` (nothing for `random`): every backbone weight must be there, with its
    shape; a classifier the file has beyond the backbone is dropped. One line naming what does not fit."""
    if weights.kind == "random":
        return
    state = read_state(weights)
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{len(missing)} missing, e.g. {missing[:2]}" if missing else "",
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}" if unexpected else "",
            f"{len(wrong)} of another shape, e.g. {wrong[:2]}" if wrong else "",
        ]
        raise UserError(
            f"weights={weights.spec} do not fit the backbone ({'; '.join(p for p in problems if p)}): "
            "pass the backbone= (and backbone.cifar_stem=) they were trained with"
        )
    backbone.load_state_dict(state)
