"""Fidelity to the papers and their reference code (issue 13): each test guards one deviation found
by the audit against the official implementations."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import open_dict

from conftest import TINY_RUN, compose_train, run_script, train


def test_colorization_is_evaluated_on_its_lightness_input(tmp_path, monkeypatch):
    """The kNN monitor, the final evaluation of train.py and eval.py all feed colorization's backbone
    the grey image of the input's lightness, the input it is trained on, not the colour image."""
    from selfsup.checks import check_train_config
    from selfsup.data.pretext import lightness_input
    from selfsup.run import pipeline

    evaluated = []
    real_evaluate = pipeline.evaluate_backbone
    monkeypatch.setattr(pipeline, "evaluate_backbone",
                        lambda backbone, *a, **kw: evaluated.append(backbone) or real_evaluate(backbone, *a, **kw))
    cfg = compose_train(["method=colorization", "data=digits", *TINY_RUN, "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=1", "images=false"], tmp_path)
    check_train_config(cfg)
    results = pipeline.pretrain(cfg)
    eval_cfg = compose_train([], tmp_path)  # eval.py's keys are a subset of train.py's
    with open_dict(eval_cfg):
        eval_cfg.ckpt_path, eval_cfg.data = results["checkpoint"], None
    pipeline.evaluate_checkpoint(eval_cfg)
    assert len(evaluated) == 2  # train.py's final evaluation, eval.py's

    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (cfg.data.mean, cfg.data.std))
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # colour, unlike the digits
    for backbone in evaluated:
        backbone.cpu().eval()
        raw = backbone.backbone
        with torch.no_grad():
            expected = raw(lightness_input(images, mean, std))
            assert not torch.allclose(raw(images), expected, atol=1e-4)  # colour matters to conv1
            torch.testing.assert_close(backbone(images), expected)

    from selfsup.methods.colorization import Colorization

    model = Colorization(cfg).eval()
    with torch.no_grad():
        model.validation_step((images, torch.zeros(4, dtype=torch.long)), 0)
        torch.testing.assert_close(model._val_features[0][0], model.backbone(lightness_input(images, mean, std)))


@pytest.mark.parametrize("lr, expected", [
    # ||w|| = 5, ||g|| = 1, eta 0.02: ratio 0.1; at lr 0.05, ratio / lr = 2 is clipped to 1: w - lr * g
    (0.05, [3 - 0.05 * 0.6, 4 - 0.05 * 0.8]),
    # at lr 1.0, ratio / lr = 0.1 stays: w - lr * 0.1 * g, as without clipping
    (1.0, [3 - 0.1 * 0.6, 4 - 0.1 * 0.8]),
])
def test_lars_clip_lr_step_matches_a_hand_computed_reference(lr, expected):
    from selfsup.optim import LARS

    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    weight.grad = torch.tensor([[0.6, 0.8]])
    LARS([weight], lr=lr, momentum=0.9, trust_coefficient=0.02, clip_lr=True).step()
    torch.testing.assert_close(weight.detach(), torch.tensor([expected]))


def test_solo_learn_cifar_recipes_clip_the_lars_lr():
    for recipe in ("simclr", "byol", "barlow_twins", "vicreg", "dino", "mocov3"):
        cfg = compose_train([f"experiment={recipe}_cifar10"])
        assert (cfg.optimizer.name, cfg.optimizer.trust_coefficient, cfg.optimizer.clip_lr) == ("lars", 0.02, True), recipe


def test_simclr_imagenet_recipe_has_strength_1_jitter_and_sync_bn():
    cfg = compose_train(["experiment=simclr_imagenet"])
    assert len(cfg.augmentation.views) == 2
    for view in cfg.augmentation.views:
        assert (view.brightness, view.contrast, view.saturation, view.hue, view.jitter_p) == (0.8, 0.8, 0.8, 0.2, 0.8)
    assert cfg.strategy.sync_batchnorm
    assert compose_train(["experiment=byol_imagenet"]).strategy.sync_batchnorm


def test_barlow_twins_biases_and_norms_get_their_own_lr():
    """The official code: LR 0.2 per 256 for the weights, 0.0048 for biases and BN parameters."""
    from selfsup.methods.barlow_twins import BarlowTwins

    assert compose_train(["experiment=barlow_twins_imagenet"]).optimizer.bias_and_norm_lr_factor == 0.024
    cfg = compose_train(["method=barlow_twins", "data=digits", "optimizer=lars", "optimizer.bias_and_norm_lr_factor=0.024",
                         "method.projector.hidden_dim=32", "method.projector.output_dim=32"])
    model = BarlowTwins(cfg)
    optimizer, _ = model.optimizer_and_schedule(1.6, total_steps=10, steps_per_epoch=1)
    lr_of = {id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]}  # before the schedule
    probe = {id(p) for p in model.online_probe.parameters()}
    for name, param in model.named_parameters():
        if id(param) not in probe:
            assert lr_of[id(param)] == pytest.approx(1.6 * 0.024 if param.ndim == 1 else 1.6), name


def test_jigsaw_tiles_are_normalised_per_tile_and_channel():
    """Noroozi's reference normalises every tile on its own, per channel: zero mean, unit (unbiased) std."""
    from selfsup.methods.jigsaw import Jigsaw

    cfg = compose_train(["method=jigsaw", "data=digits", "data.resolution=30", "method.num_permutations=100"])
    model = Jigsaw(cfg)
    fed = []
    model.backbone.register_forward_pre_hook(lambda module, args: fed.append(args[0]))
    images = torch.rand(4, 3, 30, 30) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1) + 3.0
    model.training_loss([images])
    tiles = fed[0].view(4, 9, 3, *fed[0].shape[-2:]).flatten(-2)  # the first backbone call: the 36 tiles
    assert tiles.shape[-1] > 1
    torch.testing.assert_close(tiles.mean(-1), torch.zeros(4, 9, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiles.std(-1), torch.ones(4, 9, 3), atol=1e-5, rtol=0)


def test_context_encoder_weights_the_visible_rim_it_redraws_10x():
    """Pathak's train.lua: the hole is filled overlapPred px inside the predicted region, and the L2
    weight map gives that visible border 10x the hole's weight; the loss averages over the region."""
    from selfsup.data.pretext import make_mask
    from selfsup.losses.inpainting import InpaintingLoss

    loss_fn = InpaintingLoss(overlap=2, overlap_weight=10.0)
    mask = make_mask("central", 1, 16, 16, "cpu")  # 8x8 hole at [4, 12)
    expected = torch.zeros(16, 16)
    expected[2:14, 2:14] = 10.0                    # the 2-px visible rim around the hole
    expected[4:12, 4:12] = 1.0                     # the hole
    assert torch.equal(loss_fn.pixel_weights(mask)[0, 0], expected)
    target, pred = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    assert loss_fn(pred, target, mask).item() == pytest.approx((64 + 10 * 80) / 144)


def test_context_encoder_critic_judges_the_redrawn_region_at_a_tenth_of_the_lr():
    from selfsup.methods.context_encoder import ContextEncoder

    for recipe in ("context_encoder_cifar10", "context_encoder_imagenet"):
        cfg = compose_train([f"experiment={recipe}"])
        assert cfg.optimizer.lr == pytest.approx(10 * cfg.method.discriminator.optimizer.lr), recipe
    cfg = compose_train(["method=context_encoder", "data=digits", "data.resolution=32", "loss.overlap=2"])
    model = ContextEncoder(cfg)
    judged = []
    model.discriminator.register_forward_pre_hook(lambda module, args: judged.append(args[0]))
    x = torch.randn(2, 3, 32, 32)
    model.training_loss([x])
    assert judged[0].shape[-2:] == (20, 20)  # the 16x16 central hole and its 2-px rim, nothing else
    real, fake = model._critic_inputs
    torch.testing.assert_close(real, x[..., 6:26, 6:26])


@pytest.fixture(scope="module")
def cifar_checkpoint(tmp_path_factory) -> str:
    """A tiny SimCLR run on the CIFAR sample (2 steps at 32 px): its checkpoint, for eval.py."""
    from conftest import CIFAR_SUBSET

    if not (CIFAR_SUBSET / "train").is_dir():
        pytest.skip(f"the CIFAR sample is not at {CIFAR_SUBSET}")
    run_dir = tmp_path_factory.mktemp("tiny_cifar_run")
    results = train(["method=simclr", "data=folder", f"data.root={CIFAR_SUBSET}", "data.resolution=32", *TINY_RUN,
                     "images=false"], run_dir)
    return results["checkpoint"]


def _eval_py(args: list[str], run_dir) -> dict:
    proc = run_script("eval.py", [*args, "trainer.precision=32-true"], run_dir)
    assert proc.returncode == 0, f"eval.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((run_dir / "results.json").read_text())


def test_eval_py_runs_the_standard_linear_protocol(cifar_checkpoint, tmp_path):
    results = _eval_py([f"ckpt_path={cifar_checkpoint}", "eval=linear_standard", "eval.linear_standard.epochs=1"],
                       tmp_path)
    assert results["linear_protocol"] == "standard" and results["linear_epochs"] == 1
    assert 0 <= results["linear_top1"] <= results["linear_top5"] <= 1
    assert 0 <= results["knn_top1"] <= results["knn_top5"] <= 1


def test_the_fast_probe_says_it_is_the_probe_and_low_shot_uses_10_percent_of_each_class(cifar_checkpoint, tmp_path):
    from conftest import CIFAR_SUBSET

    per_class = [len(list(d.iterdir())) for d in sorted((CIFAR_SUBSET / "train").iterdir())]
    results = _eval_py([f"ckpt_path={cifar_checkpoint}", "eval=linear", "eval.label_fraction=0.1",
                        "eval.linear.weight_decays=[1.0e-4]", "eval.linear.max_iter=20"], tmp_path)
    assert results["linear_protocol"] == "probe_lbfgs" and "linear_top5" in results
    assert results["label_fraction"] == 0.1
    assert results["labelled_images"] == sum(round(0.1 * n) for n in per_class)


def test_label_fraction_takes_exactly_that_share_of_every_class_seeded():
    from selfsup.eval.subsets import class_balanced_indices

    labels = torch.arange(5).repeat_interleave(torch.tensor([100, 50, 30, 200, 10]))[torch.randperm(390)]
    chosen = class_balanced_indices(labels, 0.1, seed=3)
    assert torch.bincount(labels[chosen], minlength=5).tolist() == [10, 5, 3, 20, 1]
    assert torch.equal(chosen, class_balanced_indices(labels, 0.1, seed=3))      # seeded
    assert not torch.equal(chosen, class_balanced_indices(labels, 0.1, seed=4))  # and the seed matters
    assert len(chosen.unique()) == len(chosen)


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
    assert recipe_warning(compose_train(["experiment=simclr_imagenet"])) is None    # a recipe: nothing to say
    assert recipe_warning(compose_train(["method=simclr", "data=digits"])) is None  # not a benchmark
