"""The pretext-task methods (RotNet, Jigsaw, context encoder, colorization) and the pairwise margin loss in SimCLR:
each composes and trains a step; runs through train.py write their results and image grids."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_RUN, compose_train, run_script, train
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from selfsup.data.batch_ops import denormalize
from selfsup.errors import UserError

RESULT_KEYS = {
    "method",
    "data",
    "backbone",
    "epochs",
    "steps",
    "knn_top1_at_init",
    "knn_top1",
    "train_seconds",
    "train_images_per_sec",
    "checkpoint",
}


STEP_CASES = {
    "rotnet": ["method=rotnet"],
    "rotnet-one-rotation": ["method=rotnet", "method.all_rotations=false"],
    "jigsaw": ["method=jigsaw", "method.num_permutations=100", "method.color_drop=true"],
    "context_encoder": ["method=context_encoder"],
    "context_encoder-l2-random_region": [
        "method=context_encoder",
        "loss.adversarial=false",
        "method.mask.kind=random_region",
    ],
    "colorization": ["method=colorization"],
    "colorization-regression": ["method=colorization", "loss.kind=regression", "method.output_stride=1"],
    "simclr-pairwise_margin": ["method=simclr", "loss=pairwise_margin"],
}


TASK_ACCURACY = {"rotnet": "rotation_acc", "jigsaw": "jigsaw_acc"}


@pytest.mark.parametrize("case", STEP_CASES)
def test_method_composes_and_a_step_trains_the_backbone(case, tmp_path):
    torch.manual_seed(0)
    cfg = compose_train([*STEP_CASES[case], "data=cifar10", "backbone.cifar_stem=false"], tmp_path)
    model = get_class(cfg.method._target_)(cfg)
    views = [torch.randn(8, 3, 32, 32) for _ in cfg.augmentation.views]
    out = model.training_loss(views)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.features.shape == (8, model.feature_dim)  # the whole images', for the online probe
    method = cfg.method.name
    if method in TASK_ACCURACY:
        assert TASK_ACCURACY[method] in out.logs  # logged as train/<name>
    out.loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_pretext_methods_use_their_single_view_augmentation(tmp_path):
    expected = {"rotnet": "rotation", "jigsaw": "jigsaw", "context_encoder": "inpainting", "colorization": "inpainting"}
    for method, augmentation in expected.items():
        cfg = compose_train([f"method={method}"], tmp_path)
        assert cfg.augmentation.name == augmentation and len(cfg.augmentation.views) == 1
    cfg = compose_train(["method=rotnet", "augmentation=simclr", "data=cifar10"], tmp_path)
    with pytest.raises(UserError, match="one view"):
        get_class(cfg.method._target_).check_config(cfg, world_size=1)


def test_context_encoder_hides_the_configured_area_behind_the_dataset_mean(tmp_path):
    cfg = compose_train(["method=context_encoder", "data=cifar10", "backbone.cifar_stem=false"], tmp_path)
    model = get_class(cfg.method._target_)(cfg).eval()
    x = torch.randn(4, 3, 32, 32)
    mask = model._mask(x)
    masked, pred = model._inpaint(x, mask)
    hole = mask.bool().expand_as(x)
    assert mask.mean(dim=(1, 2, 3)).tolist() == [0.25] * 4 and pred.shape == x.shape
    assert torch.equal(masked[~hole], x[~hole]) and (masked[hole] == 0).all()  # 0 = the mean once normalised
    pixels = denormalize(masked, cfg.data.mean, cfg.data.std)
    assert torch.allclose(pixels[0, :, 16, 16], torch.tensor(cfg.data.mean))


def test_jigsaw_unavailable_permutation_count_fails_in_one_line(tmp_path):
    cfg = compose_train(["method=jigsaw", "method.num_permutations=7", "data=cifar10"], tmp_path)
    with pytest.raises(UserError, match=r"num_permutations=7.*available: \[100, 1000, 2000\]"):
        get_class(cfg.method._target_).check_config(cfg, world_size=1)
    proc = run_script(
        "train.py", ["method=jigsaw", "method.num_permutations=7", "data=digits", "eval.knn_at_init=false"], tmp_path
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "num_permutations=7" in errors[0] and "[100, 1000, 2000]" in errors[0]


@pytest.mark.parametrize("method", ["context_encoder", "colorization"])
def test_generative_run_writes_results_and_its_image_grid(method, tmp_path):
    # context_encoder runs adversarially by default: two optimizers, manual optimisation.
    results = train(
        [f"method={method}", "data=digits", *TINY_RUN, "method.image_every_n_epochs=5", "trainer.log_every_n_steps=1"],
        tmp_path,
    )
    assert RESULT_KEYS <= results.keys() and results["method"] == method
    assert results["steps"] == 2  # one global step per batch, even with a critic optimizer
    grids = sorted(p.name for p in (tmp_path / "images").glob("epoch_*.png"))
    assert grids == ["epoch_000.png"]  # the last epoch always draws, whatever image_every_n_epochs
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    if method == "context_encoder":
        assert "train/discriminator_loss" in header and "train/adversarial_loss" in header


def test_simclr_with_the_pairwise_margin_loss_writes_results(tmp_path):
    results = train(["method=simclr", "loss=pairwise_margin", "data=digits", *TINY_RUN], tmp_path)
    assert RESULT_KEYS <= results.keys() and results["method"] == "simclr" and results["steps"] == 2
    trained_with = OmegaConf.load(tmp_path / ".hydra" / "config.yaml").loss._target_
    assert trained_with == "selfsup.losses.pairwise_margin.PairwiseMarginLoss"
    assert math.isfinite(results["metrics"]["train/loss"])


def test_colorization_is_evaluated_on_its_lightness_input(tmp_path, monkeypatch):
    """The kNN monitor, the final evaluation of train.py and eval.py all feed colorization's backbone
    the grey image of the input's lightness, the input it is trained on, not the colour image."""
    from selfsup.checks import check_train_config
    from selfsup.data.pretext import lightness_input
    from selfsup.run import pipeline
    from selfsup.run.plan import plan_run

    evaluated = []
    real_evaluate = pipeline.evaluate_backbone
    monkeypatch.setattr(
        pipeline,
        "evaluate_backbone",
        lambda backbone, *a, **kw: evaluated.append(backbone) or real_evaluate(backbone, *a, **kw),
    )
    cfg = compose_train(
        [
            "method=colorization",
            "data=digits",
            *TINY_RUN,
            "++trainer.limit_train_batches=1",
            "++trainer.limit_val_batches=1",
            "images=false",
        ],
        tmp_path,
    )
    check_train_config(cfg)
    results = pipeline.pretrain(plan_run(cfg))
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
