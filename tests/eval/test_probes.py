"""The online probe's isolation from the backbone, the offline linear probe, and fine-tuning, against independent
computations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train, cpu_trainer
from hydra.utils import get_class
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from selfsup.eval.finetune import finetune
from selfsup.eval.linear import linear_probe


class FixedBatch(Dataset):
    """One batch of two 16 px views with the given labels (-1: unlabelled)."""

    def __init__(self, labels: torch.Tensor):
        generator = torch.Generator().manual_seed(0)
        self.views = torch.randn(len(labels), 2, 3, 16, 16, generator=generator)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return [self.views[i, 0], self.views[i, 1]], self.labels[i]


class GradientsBeforeTheStep(Callback):
    """The gradients of every parameter before the update, a copy of the probe they belong to, and
    (recorded by `_one_step`) the features the probe was given."""

    def __init__(self):
        self.grads, self.probe, self.features = None, None, None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {name: p.grad.clone() for name, p in pl_module.named_parameters() if p.grad is not None}
        self.probe = copy.deepcopy(pl_module.online_probe)


def _simclr(tmp_path):
    cfg = compose_train(
        [
            "method=simclr",
            "data=digits",
            "data.batch_size=8",
            "backbone.cifar_stem=false",
            "method.projector.hidden_dim=32",
            "method.projector.output_dim=16",
        ],
        tmp_path,
    )
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


def _one_step(model, labels: torch.Tensor, tmp_path) -> GradientsBeforeTheStep:
    """One training step through Lightning; also records the features the probe was given."""
    seen = GradientsBeforeTheStep()
    training_loss = model.training_loss

    def recorded(views):
        out = training_loss(views)
        seen.features = out.features.detach().clone()
        return out

    model.training_loss = recorded
    trainer = cpu_trainer(tmp_path, max_steps=1, callbacks=[seen])
    trainer.fit(model, train_dataloaders=DataLoader(FixedBatch(labels), batch_size=len(labels)))
    return seen


def test_online_probe_loss_leaves_the_backbone_gradients_unchanged(tmp_path, one_thread):
    """training_step = SSL loss + probe loss on detached features: the backbone's (and projector's)
    gradients are exactly those of the SSL loss alone, whatever the labels; the probe still learns."""
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    stepped = _one_step(_simclr(tmp_path), labels, tmp_path)
    reference = _simclr(tmp_path)
    views = FixedBatch(labels).views
    reference.training_loss([views[:, 0], views[:, 1]]).loss.backward()
    ssl = {name: p.grad for name, p in reference.named_parameters() if not name.startswith("online_probe.")}
    assert ssl.keys() == {name for name in stepped.grads if not name.startswith("online_probe.")}
    for name, grad in ssl.items():
        torch.testing.assert_close(stepped.grads[name], grad, rtol=0, atol=1e-6, msg=name)
    assert stepped.grads["online_probe.1.weight"].abs().sum() > 0  # the probe did get its loss
    other_labels = _one_step(_simclr(tmp_path), labels.flip(0), tmp_path)
    for name, grad in ssl.items():
        torch.testing.assert_close(other_labels.grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_online_probe_ignores_unlabelled_rows(tmp_path, one_thread):
    labels = torch.tensor([-1, 3, -1, 0, 7, -1, 2, 2])
    seen = _one_step(_simclr(tmp_path), labels, tmp_path)
    kept = labels >= 0
    probe = seen.probe
    F.cross_entropy(probe(seen.features)[kept], labels[kept]).backward()  # the mean over labelled rows only
    for name, p in probe.named_parameters():
        torch.testing.assert_close(seen.grads[f"online_probe.{name}"], p.grad, rtol=1e-5, atol=1e-6)


def test_linear_probe_picks_the_weight_decay_that_scores_best_on_the_held_out_split():
    """Two data sets whose best weight decay is known. Noise features with 30% minority labels: with
    d > n any small decay interpolates the noise and misclassifies held-out points, a huge one keeps
    the weights ~0 and predicts the majority class (~0.7). Separable clusters: the huge decay cannot
    fit them, the small one does. The grid's order is the same for both, so neither 'first' nor
    'last' nor 'smallest' can pass both; the refit on the whole split uses the chosen decay."""
    grid = [1e-4, 1e3]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 400, generator=g)
    y = (torch.rand(700, generator=g) < 0.3).long()
    noise = linear_probe(x[:600], y[:600], x[600:], y[600:], 2, weight_decays=grid, holdout_fraction=0.5)
    held_out = noise["linear_holdout_top1"]
    assert held_out[1e3] > held_out[1e-4] + 0.05, held_out  # the data is what the test assumes
    assert noise["linear_weight_decay"] == 1e3
    majority = int(y[:600].bincount().argmax())
    assert noise["linear_top1"] == pytest.approx((y[600:] == majority).float().mean().item())  # refit with 1e3

    centers = torch.randn(4, 16, generator=g) * 3
    labels = torch.arange(400) % 4
    clusters = centers[labels] + torch.randn(400, 16, generator=g)
    separable = linear_probe(clusters[:300], labels[:300], clusters[300:], labels[300:], 4, weight_decays=grid)
    held_out = separable["linear_holdout_top1"]
    assert held_out[1e-4] > held_out[1e3] + 0.5, held_out
    assert separable["linear_weight_decay"] == 1e-4


def test_linear_probe_learns_a_separable_set_with_the_default_grid():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 32, generator=g) * 2
    labels = torch.arange(500) % 5
    x = centers[labels] + torch.randn(500, 32, generator=g)
    result = linear_probe(x[:400], labels[:400], x[400:], labels[400:], 5)
    assert result["linear_top1"] >= 0.9, result


def _red_and_blue(root, per_class: dict[str, int]):
    """An ImageFolder of noisy 12 px images, reddish or bluish: separable by colour alone."""
    generator = torch.Generator().manual_seed(0)
    for split, n in per_class.items():
        for label, channel in (("blue", 2), ("red", 0)):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(12, 12, 3, generator=generator) * 80).to(torch.uint8)
                pixels[..., channel] += 150
                Image.fromarray(pixels.numpy()).save(root / split / label / f"{i}.png")
    return root


def test_finetune_learns_and_leaves_the_pretrained_backbone_untouched(tmp_path, one_thread):
    from selfsup.data.datamodule import build_data
    from selfsup.models.backbones import build_backbone

    root = _red_and_blue(tmp_path / "data", {"train": 32, "val": 16})
    cfg = compose_train(
        [
            "data=folder",
            f"data.root={root}",
            "data.resolution=16",
            "data.batch_size=16",
            "data.num_workers=0",
            "eval=finetune",
        ],
        tmp_path,
    )
    cfg, datamodule = build_data(cfg)
    torch.manual_seed(0)
    backbone = build_backbone(**OmegaConf.merge(cfg.backbone, {"cifar_stem": False}))
    pretrained = {name: value.clone() for name, value in backbone.state_dict().items()}
    scores = finetune(backbone, datamodule, cfg.eval.finetune, torch.device("cpu"))
    assert scores["finetune_top1"] >= 0.9, scores
    after = backbone.state_dict()
    assert after.keys() == pretrained.keys()
    assert all(torch.equal(after[name], value) for name, value in pretrained.items())  # weights and BN statistics
