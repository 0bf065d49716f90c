"""The published recipes (conf/experiment): LARS clipping, SimCLR's ImageNet augmentation and SyncBN, the global
batch kept across device counts, and the recipe named for a benchmark dataset."""

from __future__ import annotations

import pytest
from conftest import compose_train


def test_solo_learn_cifar_recipes_clip_the_lars_lr():
    for recipe in ("simclr", "byol", "barlow_twins", "vicreg", "dino", "mocov3"):
        cfg = compose_train([f"experiment={recipe}_cifar10"])
        assert (cfg.optimizer.name, cfg.optimizer.trust_coefficient, cfg.optimizer.clip_lr) == ("lars", 0.02, True), (
            recipe
        )


def test_simclr_imagenet_recipe_has_strength_1_jitter_and_sync_bn():
    cfg = compose_train(["experiment=simclr_imagenet"])
    assert len(cfg.augmentation.views) == 2
    for view in cfg.augmentation.views:
        assert (view.brightness, view.contrast, view.saturation, view.hue, view.jitter_p) == (0.8, 0.8, 0.8, 0.2, 0.8)
    assert cfg.strategy.sync_batchnorm
    assert compose_train(["experiment=byol_imagenet"]).strategy.sync_batchnorm


def test_a_recipe_keeps_its_published_global_batch_when_the_device_count_changes():
    from selfsup.checks import check_global_batch
    from selfsup.errors import UserError

    cfg = compose_train(["experiment=simclr_imagenet", "trainer.devices=4"])
    assert cfg.data.global_batch_size == 4096
    check_global_batch(compose_train(["experiment=simclr_imagenet"]), world=8 * 4)  # as published: fine
    with pytest.raises(UserError, match=r"data.global_batch_size=4096.*set data.batch_size=256") as error:
        check_global_batch(cfg, world=4 * 4)
    assert "\n" not in str(error.value)
    check_global_batch(compose_train(["experiment=simclr_imagenet", "trainer.devices=4", "data.batch_size=256"]), 16)


def test_a_benchmark_dataset_without_a_recipe_names_the_recipe_to_use():
    from selfsup.checks import recipe_warning

    warning = recipe_warning(compose_train(["method=moco", "data=imagenet"]))
    assert "experiment=mocov2_imagenet" in warning and "\n" not in warning
    assert recipe_warning(compose_train(["method=simclr", "data=cifar10"])).endswith("use experiment=simclr_cifar10")
    assert recipe_warning(compose_train(["experiment=simclr_imagenet"])) is None  # a recipe: nothing to say
    assert recipe_warning(compose_train(["method=simclr", "data=digits"])) is None  # not a benchmark
