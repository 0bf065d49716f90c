"""The exported backbone loads strictly into stock torchvision and timm; the export CLI's help and errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_script


# --- backbone export -----------------------------------------------------------------------------
def _checkpoint(tmp_path, backbone_cfg: dict):
    """A training checkpoint as train.py writes it (the keys export reads), around a backbone whose
    BatchNorm statistics are not the defaults; returns (path, backbone)."""
    from selfsup.models.backbones import build_backbone

    backbone = build_backbone(**backbone_cfg)
    with torch.no_grad():
        backbone.train()
        backbone(torch.randn(4, 3, 32, 32))  # running statistics away from 0 / 1
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["projector.0.weight"] = torch.randn(8, 8)  # the rest of the training module: not exported
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"cfg": {"backbone": backbone_cfg, "method": {"name": "simclr"}}},
            "global_step": 1,
            "epoch": 0,
        },
        path,
    )
    return path, backbone.eval()


def _same_features(code: list[str], backbone) -> None:
    """Runs the printed loading code and compares the stock model's features with the backbone's."""
    scope: dict = {}
    exec("\n".join(code), scope)  # noqa: S102 - the lines export prints for the user
    batch = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = backbone(batch), scope["model"].eval()(batch)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["standard_stem", "cifar_stem"])
def test_exported_resnet_loads_strictly_into_stock_torchvision(tmp_path, cifar_stem):
    import torchvision

    from selfsup.export import export_backbone

    path, backbone = _checkpoint(
        tmp_path, {"name": "resnet18", "cifar_stem": cifar_stem, "zero_init_residual": False, "channels_last": True}
    )
    (safetensors_path, pt_path), code = export_backbone(str(path))
    assert safetensors_path == path.parent / "backbone.safetensors" and pt_path == path.parent / "backbone.pt"
    assert ("model.maxpool = torch.nn.Identity()" in code[1]) == cifar_stem
    _same_features(code, backbone)
    if not cifar_stem:  # the .pt holds the same weights, plain tensors (weights_only loads it)
        model = torchvision.models.resnet18()
        model.fc = torch.nn.Identity()
        model.load_state_dict(torch.load(pt_path, weights_only=True))
        batch = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(batch), backbone(batch), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "backbone_cfg",
    [
        {"name": "resnet18", "cifar_stem": True, "zero_init_residual": False, "channels_last": True},
        {
            "name": "vit_tiny",
            "cifar_stem": False,
            "channels_last": False,
            "image_size": 32,
            "patch_size": None,
            "pool": "token",
            "pos_embed": "sincos",
            "drop_path_rate": 0.0,
        },
    ],
    ids=["resnet18", "vit_tiny"],
)
def test_exported_backbone_loads_strictly_into_stock_timm(tmp_path, backbone_cfg):
    pytest.importorskip("timm")
    from selfsup.export import export_backbone

    path, backbone = _checkpoint(tmp_path, backbone_cfg)
    _, code = export_backbone(str(path), "timm", str(tmp_path / "out"))
    assert "timm.create_model" in code[1]
    _same_features(code, backbone)


def test_export_cli_help_and_one_line_errors(tmp_path):
    help_proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/export.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert (
        help_proc.returncode == 0 and "ckpt_path=" in help_proc.stdout and "format=torchvision|timm" in help_proc.stdout
    )
    path, _ = _checkpoint(
        tmp_path, {"name": "resnet18", "cifar_stem": False, "zero_init_residual": False, "channels_last": True}
    )
    ok = run_script("scripts/export.py", [f"ckpt_path={path}"])
    assert ok.returncode == 0, ok.stderr
    assert "model.load_state_dict(safetensors.torch.load_file(" in ok.stdout
    for args, expected in ((["format=onnx", f"ckpt_path={path}"], "format=onnx"), (["ckpt=x"], "unexpected argument")):
        bad = run_script("scripts/export.py", args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert bad.stderr.startswith("error: ") and expected in bad.stderr and len(bad.stderr.splitlines()) == 1
