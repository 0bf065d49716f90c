"""Which view feeds which network, against computations written out here from the module's parts:
BYOL predicts each view's target projection from the other view; SimSiam predicts each view's
projection from the other view's, held fixed by a stop-gradient; MoCo's queries come from the online
encoder with gradient, its keys from the momentum encoder without; MoCo v3 contrasts each view's
query with the other view's keys over the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train
from hydra.utils import get_class

BATCH = 8


TINY = [
    "data=digits",
    f"data.batch_size={BATCH}",
    "backbone.cifar_stem=false",
    "method.projector.hidden_dim=32",
    "method.projector.output_dim=16",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(method: str, tmp_path, *overrides: str):
    cfg = compose_train([f"method={method}", *TINY, *overrides], tmp_path)
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


def _views():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, 16, 16, generator=generator) for _ in range(2)]


@torch.no_grad()
def _move_away(target: torch.nn.Module) -> None:
    """Targets start as copies of the online network; moved, every role is distinguishable."""
    for p in target.parameters():
        p.add_(0.1 * torch.randn_like(p))


def _regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def _check_prediction_of_the_other_views_target(model, target_encoder, pair_loss) -> None:
    """BYOL and MoCo v3: `pair_loss` scores each view's online prediction against the other view's output of
    the momentum `target_encoder` (backbone + projector), which gets no gradient."""
    _move_away(target_encoder)
    views = _views()
    out = model.training_loss(views)

    predictions = [model.predictor(model.projector(model.backbone(v))) for v in views]  # online, one view per forward
    with torch.no_grad():
        targets = [target_encoder(v) for v in views]
    expected = pair_loss(predictions[0], targets[1]) + pair_loss(predictions[1], targets[0])
    same_view = pair_loss(predictions[0], targets[0]) + pair_loss(predictions[1], targets[1])
    assert not torch.allclose(expected, same_view, atol=1e-3)  # the pairing is observable with these weights
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.features, model.backbone(views[0]))  # the probe sees the first view

    out.loss.backward()
    assert all(p.grad is None for p in target_encoder.parameters())  # stop-gradient: EMA only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_byol_predicts_each_views_target_from_the_other_view(tmp_path):
    model = _model("byol", tmp_path, "method.predictor.hidden_dim=32", "method.predictor.output_dim=16")
    _check_prediction_of_the_other_views_target(model, model.target_encoder, _regression)


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_queries_from_the_online_encoder_keys_from_the_momentum_encoder(symmetric, tmp_path):
    model = _model("mocov2", tmp_path, "method.queue_size=32", f"method.symmetric={str(symmetric).lower()}")
    _move_away(model.key_encoder)
    negatives = model.queue.queue.clone()
    views = _views()
    out = model.training_loss(views)

    def info_nce(query_view, key_view):
        q = F.normalize(model.projector(model.backbone(query_view)), dim=1)
        with torch.no_grad():
            k = F.normalize(model.key_encoder(key_view), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], dim=1) / model.loss_fn.temperature
        return F.cross_entropy(logits, torch.zeros(BATCH, dtype=torch.long)), k

    pairs = [(0, 1), (1, 0)] if symmetric else [(0, 1)]
    losses, keys = zip(*(info_nce(views[q], views[k]) for q, k in pairs))
    swapped, _ = info_nce(views[1], views[0])
    assert not torch.allclose(losses[0], swapped, atol=1e-3)  # the roles are observable with these weights
    torch.testing.assert_close(out.loss, torch.stack(losses).mean())
    # The keys enqueued are the momentum encoder's, of the key views, in order; the rest of the queue is untouched.
    written = len(keys) * BATCH
    torch.testing.assert_close(model.queue.queue[:written], torch.cat(keys))
    assert torch.equal(model.queue.queue[written:], negatives[written:])

    out.loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())  # keys carry no gradient
    assert all(p.grad is not None for p in model.projector.parameters())  # queries do
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def _negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of SimSiam's Eq. 1, without the stop-gradient: the caller decides what z carries."""
    return -F.cosine_similarity(p, z, dim=1).mean()


def test_simsiam_predicts_each_views_projection_from_the_other_view_under_a_stop_gradient(tmp_path):
    model = _model("simsiam", tmp_path, "method.predictor.hidden_dim=8", "method.predictor.output_dim=16")
    views = _views()
    out = model.training_loss(views)
    out.loss.backward()
    method_grad = model.backbone.conv1.weight.grad.clone()
    model.zero_grad()

    def loss(stop_gradient: bool, cross: bool = True) -> torch.Tensor:
        projections = [model.projector(model.backbone(v)) for v in views]  # one forward per view
        predictions = [model.predictor(z) for z in projections]
        targets = [z.detach() if stop_gradient else z for z in projections]
        other = (1, 0) if cross else (0, 1)
        return (
            _negative_cosine(predictions[0], targets[other[0]]) + _negative_cosine(predictions[1], targets[other[1]])
        ) / 2

    expected = loss(stop_gradient=True)
    assert not torch.allclose(expected, loss(stop_gradient=True, cross=False), atol=1e-3)  # pairing observable
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.features, model.backbone(views[0]))  # the probe sees the first view

    expected.backward()
    torch.testing.assert_close(method_grad, model.backbone.conv1.weight.grad)
    model.zero_grad()
    loss(stop_gradient=False).backward()  # without the stop-gradient the backbone would get another gradient
    assert not torch.allclose(method_grad, model.backbone.conv1.weight.grad, atol=1e-6)


def test_mocov3_contrasts_each_views_query_with_the_other_views_keys(tmp_path):
    model = _model(
        "mocov3", tmp_path, "backbone=resnet18", "method.predictor.hidden_dim=32", "method.predictor.output_dim=16"
    )
    temperature = model.loss_fn.temperature

    def contrast(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Each query's positive is the key of its own image; every other key of the batch is a negative
        (the paper's Algorithm 1: ctr(q, k) = CrossEntropy(q k^T / tau, arange(N)) x 2 tau)."""
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
        return F.cross_entropy(logits, torch.arange(BATCH)) * 2 * temperature

    _check_prediction_of_the_other_views_target(model, model.momentum_encoder, contrast)
