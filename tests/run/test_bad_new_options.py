"""Bad input to the options of issue 25 (data=images, eval.data, weights=, method.eval_encoder / encoder=, export
out=) and the three silent or traceback cases it names: each ends in one `error:` line, exit != 0, no traceback,
before anything is trained or written."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_one_line_error, make_image_tree, make_labelled_folder, run_script

from selfsup.models.backbones import build_backbone

FAST = [
    "data.batch_size=8",
    "data.num_workers=0",
    "eval.knn_at_init=false",
    "trainer.enable_progress_bar=false",
    "trainer.precision=32-true",
]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict:
    """The files and folders the cases point at."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    tree = make_image_tree(tmp / "tree", count=12)
    (tmp / "empty").mkdir()
    (tmp / "only_text").mkdir()
    (tmp / "only_text" / "readme.md").write_text("no images here\n")
    (tmp / "photo.jpg").write_bytes(b"")
    (tmp / "missing.txt").write_text("a.png\nb.png\n")
    (tmp / "plain.pt").write_bytes(b"")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp / "partial.pt")
    backbone = {f"backbone.{k}": v for k, v in build_backbone("resnet18").state_dict().items()}
    cfg = {
        "method": {"name": "simclr", "_target_": "selfsup.methods.simclr.SimCLR"},
        "ckpt_path": None,  # on data=images
        "backbone": {"name": "resnet18"},
        "data": {"name": "images", "root": str(tree), "resolution": 16},
    }
    torch.save(
        {"hyper_parameters": {"cfg": cfg}, "global_step": 5, "epoch": 0, "state_dict": backbone}, tmp / "simclr.ckpt"
    )
    found = tmp / "run_with_checkpoint"
    (found / "checkpoints").mkdir(parents=True)
    (found / "checkpoints" / "last.ckpt").write_bytes((tmp / "simclr.ckpt").read_bytes())
    return {"tmp": tmp, "tree": tree, "labelled": make_labelled_folder(tmp / "labelled", 2, 1), "found": found}


def _fill(args: list[str], place: dict) -> list[str]:
    return [arg.format(**place) for arg in args]


TRAIN_CASES = {
    "images-root-missing": (["data=images", "data.root={tmp}/nowhere"], ("nowhere does not exist", "folder tree")),
    "images-root-unset": (["data=images"], ("data.root is not set", "folder tree of images")),
    "images-root-empty": (["data=images", "data.root={tmp}/empty"], ("empty", "folder tree")),
    "images-root-a-lone-image": (["data=images", "data.root={tmp}/photo.jpg"], ("photo.jpg is a file", ".txt or .csv")),
    "images-root-without-images": (["data=images", "data.root={tmp}/only_text"], ("no images", "only_text")),
    "images-list-of-missing-files": (["data=images", "data.root={tmp}/missing.txt"], ("2 of the 2 images", "a.png")),
    "eval-data-missing": (
        ["data=images", "data.root={tree}", "eval.data={tmp}/nowhere"],
        ("eval.data=", "does not exist"),
    ),
    "eval-data-unlabelled": (
        ["data=images", "data.root={tree}", "eval.data={tree}"],
        ("eval.data=", "no train/ folder"),
    ),
    "eval-data-images": (["data=images", "data.root={tree}", "eval.data=images"], ("eval.data=images has no labels",)),
    "weights-unknown-form": (["weights=imagenet"], ("weights=imagenet is none of the forms", "random")),
    "weights-file-missing": (["weights={tmp}/gone.safetensors"], ("gone.safetensors: no such file",)),
    "weights-a-checkpoint": (["weights={tmp}/simclr.ckpt"], ("not a state dict file", "ckpt_path=")),
    "weights-torchvision-not-cached": (
        ["weights=resnet18.IMAGENET1K_V1"],
        ("not in the local torch hub cache", "hub/checkpoints/resnet18-f37072fd.pth"),
    ),
    "weights-timm-not-cached": (
        ["weights=timm/resnet18.a1_in1k"],
        ("not in the local caches", "models--timm--resnet18.a1_in1k"),
    ),
    "weights-of-another-backbone": (
        ["weights=resnet50.IMAGENET1K_V2", "backbone=resnet18"],
        ("resnet50's, not a resnet18's", "backbone=resnet50"),
    ),
    "weights-torchvision-unsupported": (["weights=vgg16.IMAGENET1K_V1"], ("resnet18, resnet34, resnet50",)),
    "eval-encoder-typo": (["method=dino", "method.eval_encoder=teacher"], ("method.eval_encoder", "teacher")),
    "eval-encoder-without-momentum": (["method=simclr", "method.eval_encoder=momentum"], ("eval_encoder",)),
    "negative-weight-decay": (["optimizer.weight_decay=-1"], ("optimizer.weight_decay must be >= 0", "-1")),
    "ckpt-path-overridden-by-resume": (
        ["ckpt_path={tmp}/simclr.ckpt"],
        ("ckpt_path=", "simclr.ckpt", "last.ckpt", "resume=never"),
    ),
}
# weights=resnet50.IMAGENET1K_V2 is absent from the tests' empty cache too: the backbone check must come first.


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_in_one_line_before_training(case, place, tmp_path):
    args, expected = TRAIN_CASES[case]
    run_dir = place["found"] if case == "ckpt-path-overridden-by-resume" else tmp_path / "run"
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    if case == "weights-of-another-backbone":  # present in the cache: only the backbone is wrong
        env["TORCH_HOME"] = str(tmp_path / "torch")
        cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"")
    proc = run_script("train.py", [*_fill(args, place), *FAST], run_dir, timeout=300, env=env)
    assert_one_line_error(proc, *_fill(list(expected), place))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert [p.name for p in (place["found"] / "checkpoints").iterdir()] == ["last.ckpt"]


EVAL_CASES = {
    "neither-checkpoint-nor-weights": ([], ("ckpt_path=", "weights=", "neither")),
    "checkpoint-and-weights": (["ckpt_path={tmp}/simclr.ckpt", "weights=random"], ("not both",)),
    "random-without-backbone": (
        ["weights=random", "eval.data={labelled}"],
        ("weights=random need a backbone", "backbone="),
    ),
    "weights-without-data": (["weights=random", "backbone=resnet18"], ("without data to score on", "eval.data=")),
    "momentum-encoder-of-simclr": (["ckpt_path={tmp}/simclr.ckpt", "encoder=momentum"], ("encoder=momentum", "SimCLR")),
    "encoder-with-weights": (["weights=random", "backbone=resnet18", "encoder=online"], ("encoder=online", "weights=")),
    "unlabelled-pretraining-data-alone": (["ckpt_path={tmp}/simclr.ckpt"], ("no labels to score on", "eval.data=")),
    "weights-that-do-not-fit": (
        ["weights={tmp}/partial.pt", "backbone=resnet18", "eval.data={labelled}"],
        ("do not fit the backbone", "missing"),
    ),
    "weights-file-not-a-state-dict": (
        ["weights={tmp}/plain.pt", "backbone=resnet18", "eval.data={labelled}"],
        ("cannot read", "plain.pt"),
    ),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_refuses_in_one_line(case, place, tmp_path):
    args, expected = EVAL_CASES[case]
    proc = run_script("eval.py", [*_fill(args, place), "trainer.precision=32-true"], tmp_path / "run", timeout=300)
    assert_one_line_error(proc, *_fill(list(expected), place))
    assert not (tmp_path / "run" / "results.json").exists()


def test_export_refuses_an_unwritable_out_and_a_missing_encoder_before_reading(place, tmp_path):
    ckpt = place["tmp"] / "simclr.ckpt"
    for out, expected in ((place["tmp"] / "photo.jpg" / "sub", "Not a directory"), ("/proc/selfsup-export", "/proc")):
        proc = run_script("scripts/export.py", [f"ckpt_path={ckpt}", f"out={out}"])
        assert_one_line_error(proc, "cannot write the export to", expected, "out=")
    proc = run_script("scripts/export.py", [f"ckpt_path={ckpt}", f"out={tmp_path}", "encoder=momentum"])
    assert_one_line_error(proc, "encoder=momentum", "SimCLR")
    assert not list(tmp_path.glob("backbone.*"))
