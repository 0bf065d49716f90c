"""eval.py on weights this project did not train (weights=: a state dict file, a torchvision or timm name from
the local caches, random) and on a momentum method's teacher; export.py's encoder= (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import assert_succeeded, compose_train, make_labelled_folder, run_script
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from selfsup.methods.dino import DINO
from selfsup.models.backbones import backbone_state, build_backbone
from selfsup.models.weights import find_weights, load_weights

FP32 = ["trainer.precision=32-true", "images=false"]
DINO_TINY = [
    "method=dino",
    "data=folder",
    "data.resolution=16",
    "method.head.hidden_dim=32",
    "method.head.bottleneck_dim=16",
    "method.head.output_dim=64",
]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return make_labelled_folder(tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="module")
def dino_checkpoint(tmp_path_factory, labelled) -> Path:
    """A DINO checkpoint (as train.py saves it) whose teacher has drifted from its student, pretrained on
    `labelled`: the student's and the teacher's backbones differ in every weight."""
    cfg = compose_train([*DINO_TINY, f"data.root={labelled}"])
    cfg = OmegaConf.merge(cfg, {"data": {"num_classes": 3}})
    OmegaConf.resolve(cfg)
    model = DINO(cfg)
    with torch.no_grad():
        for p in model.teacher[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("dino") / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {"cfg": OmegaConf.to_container(cfg)},
            "global_step": 2,
            "epoch": 0,
        },
        path,
    )
    return path


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _eval(args: list[str], run_dir: Path, env=None) -> dict:
    proc = run_script("eval.py", [*args, *FP32], run_dir, env=env)
    assert_succeeded(proc, f"eval.py {' '.join(args)}")
    return _results(run_dir)


def _export(checkpoint: Path, out: Path, *extra: str) -> Path:
    proc = run_script("scripts/export.py", [f"ckpt_path={checkpoint}", f"out={out}", *extra])
    assert_succeeded(proc, "export.py")
    return out / "backbone.safetensors"


def test_dino_exports_and_evaluates_its_teacher_by_default_and_the_student_on_request(
    dino_checkpoint, labelled, tmp_path
):
    state = torch.load(dino_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    teacher, student = backbone_state(state, "teacher.0."), backbone_state(state, "backbone.")
    exported = {}
    for encoder, extra in (("momentum", []), ("online", ["encoder=online"])):
        path = _export(dino_checkpoint, tmp_path / encoder, *extra)
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["encoder"] == encoder
        exported[encoder] = load_file(str(path))
    weight = "layer1.0.conv1.weight"
    assert torch.equal(exported["momentum"][weight], teacher[weight]) and torch.equal(
        exported["online"][weight], student[weight]
    )
    assert not torch.equal(teacher[weight], student[weight])

    data = [f"eval.data={labelled}", "eval=knn"]
    by_default = _eval([f"ckpt_path={dino_checkpoint}", *data], tmp_path / "ckpt")
    from_file = _eval([f"weights={tmp_path / 'momentum' / 'backbone.safetensors'}", *data], tmp_path / "file")
    assert by_default["encoder"] == "momentum"
    # The teacher read from the checkpoint and from its torchvision-layout export (evaluated at the resolution
    # it was trained at, which the export records): the same features, the same scores.
    assert by_default["knn_top1"] == from_file["knn_top1"] and by_default["knn_top5"] == from_file["knn_top5"]
    assert from_file["weights"]["kind"] == "file" and from_file["weights"]["backbone"] == "resnet18"
    assert from_file["method"] is None and 0 < from_file["knn_top1"] <= 1


def test_random_init_is_a_seeded_baseline_with_knn_and_linear(labelled, tmp_path):
    args = ["weights=random", "backbone=resnet18", f"eval.data={labelled}"]
    first = _eval([*args, "seed=3"], tmp_path / "a")
    assert first["weights"] == {"spec": "random", "kind": "random", "seed": 3}
    assert first["backbone"] == "resnet18" and {"knn_top1", "linear_top1"} <= first.keys()
    again = _eval([*args, "seed=3", "eval=knn"], tmp_path / "b")
    assert again["knn_top1"] == first["knn_top1"]


def _fake_torch_hub(torch_home: Path) -> dict:
    """resnet18.IMAGENET1K_V1's file in a torch hub cache under `torch_home`, with random weights: the
    whole torchvision model's state dict, classifier included, as torchvision publishes it."""
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    model = torchvision.models.resnet18()
    path = torch_home / "hub" / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    return model.state_dict()


def test_a_torchvision_weight_name_loads_from_the_local_cache_only(tmp_path, monkeypatch, labelled):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    published = _fake_torch_hub(tmp_path / "torch")
    weights = find_weights("resnet18.IMAGENET1K_V1")
    assert weights.kind == "torchvision" and weights.backbone == "resnet18"
    backbone = build_backbone("resnet18", cifar_stem=False)
    load_weights(backbone, weights)
    assert all(torch.equal(v, published[k]) for k, v in backbone.state_dict().items())

    results = _eval(
        ["weights=resnet18.IMAGENET1K_V1", f"eval.data={labelled}", "eval=knn"],
        tmp_path / "run",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert results["weights"]["path"] == str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert results["backbone"] == "resnet18" and 0 < results["knn_top1"] <= 1


def test_a_timm_name_loads_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    snapshot = cache / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (cache / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (cache / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abc")
    published = timm.create_model("resnet18", pretrained=False).state_dict()  # classifier (fc) included
    save_file(published, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = find_weights("timm/resnet18.a1_in1k")
    assert (weights.kind, weights.backbone, weights.path) == (
        "timm",
        "timm/resnet18",
        str(snapshot / "model.safetensors"),
    )
    backbone = build_backbone("timm/resnet18")
    load_weights(backbone, weights)
    assert all(torch.equal(v, published[k]) for k, v in backbone.state_dict().items())


def test_a_warm_start_loads_the_backbone_and_a_momentum_target_follows(tmp_path):
    from selfsup.methods.byol import BYOL

    source = build_backbone("resnet18", cifar_stem=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = compose_train(
        [
            "method=byol",
            "data.resolution=16",
            "method.projector.hidden_dim=32",
            "method.predictor.hidden_dim=32",
            f"weights={tmp_path / 'w.safetensors'}",
        ]
    )
    OmegaConf.resolve(cfg)
    model = BYOL(cfg)
    model.start_from(find_weights(cfg.weights))
    for name, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value)
        assert torch.equal(model.target_encoder[0].state_dict()[name], value)
