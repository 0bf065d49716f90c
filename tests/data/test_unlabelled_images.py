"""data=images: any folder tree of images, or a .txt/.csv list of them, without labels; eval.data names the
labelled data it is scored on (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf

from selfsup.checks import check_inputs, eval_data
from selfsup.config.data_choice import data_config
from selfsup.data.datamodule import SSLDataModule, completed_config
from selfsup.data.datasets import NO_LABEL, build_datasets
from selfsup.errors import UserError


def images_cfg(root, *extra: str):
    return compose_train(["data=images", f"data.root={root}", "data.batch_size=8", *extra])


def test_a_nested_tree_of_mixed_formats_and_sizes_is_every_image_once_without_labels(tree):
    pretrain, labelled, val = build_datasets(images_cfg(tree).data)
    assert labelled is None and val is None
    paths = [Path(p) for p, _ in pretrain.samples]
    assert len(paths) == 36 and len(set(paths)) == 36
    assert {p.suffix for p in paths} == {".png", ".jpg", ".webp", ".bmp"}
    assert any(p.parent.name == "raw" for p in paths)  # two levels down
    assert not any(p.name.startswith(".") or p.suffix == ".txt" for p in paths)
    sizes = {pretrain[i][0].size for i in range(len(pretrain))}
    assert len(sizes) > 3 and {pretrain[i][1] for i in range(len(pretrain))} == {NO_LABEL}


def test_a_txt_or_csv_list_names_the_images_relative_to_its_folder(tree, tmp_path):
    files = sorted(p for p in tree.rglob("img_*"))[:10]
    listing = tree / "some.txt"
    listing.write_text("\n".join(str(p.relative_to(tree)) for p in files[:6]) + "\n\n")
    table = tmp_path / "list.csv"
    table.write_text("path,caption\n" + "".join(f"{p},a photo\n" for p in files))  # absolute paths, a header
    assert [p for p, _ in build_datasets(images_cfg(listing).data)[0].samples] == [str(p) for p in files[:6]]
    assert len(build_datasets(images_cfg(table).data)[0]) == 10
    listing.unlink()


def test_a_list_naming_missing_images_fails_in_one_line(tree, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{next(tree.rglob('img_*'))}\nnowhere/a.jpg\n")
    with pytest.raises(UserError, match=r"1 of the 2 images listed in .* do not exist, e.g. .*nowhere/a.jpg"):
        build_datasets(images_cfg(listing).data)


def test_without_eval_data_there_are_no_classes_and_no_val_loaders(tree):
    cfg = images_cfg(tree)
    datasets = build_datasets(cfg.data)
    cfg = completed_config(cfg, datasets)
    assert cfg.data.num_classes is None and cfg.data.resolution == min(datasets[0][0][0].size)  # the first image's
    module = SSLDataModule(cfg.data, cfg.augmentation, datasets=datasets)
    assert module.val_dataloader() == []
    bank, queries = module.evaluation_loaders()  # the pictures' sample: the pretraining images, once
    assert bank is queries and len(bank.dataset) == 36


def test_eval_data_brings_the_labelled_splits_and_their_classes(tree, labelled):
    cfg = images_cfg(tree, f"eval.data={labelled}")
    scored = eval_data(cfg)
    datasets = build_datasets(cfg.data, scored)
    cfg = completed_config(cfg, datasets, scored)
    assert len(datasets[0]) == 36 and len(datasets[1]) == 36 and len(datasets[2]) == 18
    assert cfg.data.num_classes == 3 and datasets[1].classes == ["bluish", "greenish", "reddish"]


def test_eval_data_names_a_data_config_as_data_would_compose_it():
    paths = compose_train([]).paths
    cifar = data_config("cifar10", paths)
    assert (cifar.name, cifar.num_classes, cifar.resolution) == ("cifar10", 10, 32)
    assert cifar.root == f"{paths.data_dir}/cifar10"
    subset = data_config("imagenet100", paths)  # extends imagenet.yaml
    assert subset.num_classes == 100 and subset.root.endswith("/imagenet") and subset.class_list.endswith(".txt")
    assert data_config("/some/where", paths).name == "folder"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.root=/no/such/tree"], "data root /no/such/tree does not exist"),
        (["data.root=FILE:x.jpg"], "is a file but not a .txt or .csv list"),
        (["data.root=EMPTY"], "is empty"),
        (["eval.data=/no/such/folder"], "eval.data=/no/such/folder: data root /no/such/folder does not exist"),
        (["eval.data=TREE"], "eval.data=TREE: data root TREE has no train/ folder"),
        (["eval.data=images"], "eval.data=images has no labels"),
    ],
)
def test_bad_roots_fail_in_one_line_before_torch_work(overrides, message, tree, tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    swap = {"FILE:x.jpg": str(tmp_path / "x.jpg"), "EMPTY": str(tmp_path / "empty"), "TREE": str(tree)}
    overrides = [o.split("=")[0] + "=" + swap.get(o.split("=", 1)[1], o.split("=", 1)[1]) for o in overrides]
    cfg = images_cfg(tree, *overrides)
    with pytest.raises(UserError) as err:
        check_inputs(cfg)
    for key, value in swap.items():
        message = message.replace(key, value)
    assert message in str(err.value)


def test_the_online_probe_is_off_without_labels_and_with_eval_data(tree, labelled):
    from selfsup.methods.simclr import SimCLR

    for extra in ([], [f"eval.data={labelled}"]):
        cfg = images_cfg(tree, *extra)
        cfg = OmegaConf.merge(cfg, {"data": {"resolution": 16, "num_classes": 3 if extra else None}})
        model = SimCLR(cfg)
        assert model.online_probe is None
        views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        out, probe_loss = model.step_losses(views, torch.full((4,), NO_LABEL))
        assert torch.isfinite(out.loss) and probe_loss.item() == 0.0
