"""SimSiam, VICReg and DINO: each loss against an independent computation written from its paper,
the cross-rank versions on 2 CPU ranks against 1 process on the global batch, DINO's centering,
teacher-temperature schedule, view-pair masking, frozen teacher and frozen last layer, SimSiam's
fixed predictor LR, the paper recipes, and a tiny run of each method through train.py."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_RUN, compose_train, train
from hydra.utils import get_class
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, Dataset

from selfsup.data.transforms import view_resolution
from selfsup.errors import UserError
from selfsup.losses.dino import DINOLoss, pair_mask
from selfsup.losses.negative_cosine import NegativeCosineLoss
from selfsup.losses.vicreg import VICRegLoss
from selfsup.optim import scaled_lr

from distributed_harness import check_loss_matches_global_batch, run_on_ranks

BATCH = 8
TINY_HEADS = {
    "simsiam": ["method.projector.hidden_dim=32", "method.projector.output_dim=16",
                "method.predictor.hidden_dim=8", "method.predictor.output_dim=16"],
    "vicreg": ["method.expander.hidden_dim=32", "method.expander.output_dim=32"],
    "dino": ["method.head.hidden_dim=32", "method.head.bottleneck_dim=8", "method.head.output_dim=64"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- SimSiam loss

def test_negative_cosine_is_simsiams_d_with_stop_gradient():
    """D(p, z) = -p/||p||_2 . z/||z||_2 (Chen & He 2021, Eq. 1), averaged over the batch; no gradient to z."""
    torch.manual_seed(0)
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    loss = NegativeCosineLoss()(p, z)
    pv, zv = p.detach().double(), z.detach().double()
    expected = sum(-float(pv[i] @ zv[i]) / (math.sqrt(float(pv[i] @ pv[i])) * math.sqrt(float(zv[i] @ zv[i])))
                   for i in range(6)) / 6
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0
    assert NegativeCosineLoss()(pv.float(), pv.float() * 3).item() == pytest.approx(-1.0, abs=1e-6)


# ------------------------------------------------------------------------------- VICReg loss

def _vicreg_naive(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    """Bardes et al. 2022, Eqs. 1-6, written out element by element in float64."""
    z1, z2 = z1.double().tolist(), z2.double().tolist()
    n, d = len(z1), len(z1[0])
    inv = sum((z1[i][j] - z2[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def mean(z, j):
        return sum(z[i][j] for i in range(n)) / n

    def cov(z, a, b):
        return sum((z[i][a] - mean(z, a)) * (z[i][b] - mean(z, b)) for i in range(n)) / (n - 1)

    def v(z):
        return sum(max(0.0, gamma - math.sqrt(cov(z, j, j) + eps)) for j in range(d)) / d

    def c(z):
        return sum(cov(z, a, b) ** 2 for a in range(d) for b in range(d) if a != b) / d

    std, covariance = (v(z1) + v(z2)) / 2, c(z1) + c(z2)
    return lam * inv + mu * std + nu * covariance, {"inv": inv, "std": std, "cov": covariance}


def test_vicreg_matches_the_paper_element_by_element():
    torch.manual_seed(0)
    z1 = torch.randn(8, 5) * torch.tensor([0.3, 1.0, 2.0, 0.5, 1.5]) + 1
    z2 = z1 + 0.4 * torch.randn(8, 5)
    for weights in ((25.0, 25.0, 1.0), (1.0, 2.0, 3.0)):
        loss, terms = VICRegLoss(*weights)(z1, z2)
        expected, expected_terms = _vicreg_naive(z1, z2, *weights)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        for name, value in expected_terms.items():
            assert terms[name].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_vicreg_variance_hinge_and_collapse():
    """Every dimension with std >= gamma pays nothing; a collapsed batch pays gamma - sqrt(eps) per view."""
    torch.manual_seed(0)
    spread = torch.randn(64, 4) * 5
    assert VICRegLoss()(spread, spread)[1]["std"].item() == 0.0
    collapsed = torch.ones(8, 4)
    assert VICRegLoss()(collapsed, collapsed)[1]["std"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.randn(1, 3), torch.randn(1, 3))


class _LossValue(nn.Module):
    """A (loss, terms) loss as the plain loss the distributed harness differentiates."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, z1, z2):
        return self.loss(z1, z2)[0]


def test_vicreg_two_ranks_match_global_batch():
    """Variance and covariance over the global batch (gathered with gradient), invariance averaged by
    DDP: 2 gloo ranks give the loss and the input and parameter gradients of one process on 2B."""
    check_loss_matches_global_batch(_LossValue(VICRegLoss()))


# ------------------------------------------------------------------------------- DINO loss

def _softmax(row, temperature):
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def _dino_naive(student, teacher, center, student_temperature, teacher_temperature):
    """Caron et al. 2021, Algorithm 1: H(P_t, P_s) summed over pairs of different views, each averaged
    over the batch, divided by the number of pairs; P_t = softmax((t - c) / tau_t)."""
    total, pairs = 0.0, 0
    for t_index, t in enumerate(teacher):
        for s_index, s in enumerate(student):
            if s_index == t_index:
                continue
            batch = [-sum(q * math.log(p) for q, p in zip(_softmax([a - c for a, c in zip(t_row, center)],
                                                                       teacher_temperature),
                                                              _softmax(s_row, student_temperature)))
                     for t_row, s_row in zip(t.double().tolist(), s.double().tolist())]
            total += sum(batch) / len(batch)
            pairs += 1
    return total / pairs


def test_pair_mask_skips_each_view_with_itself():
    assert pair_mask(2, 4).tolist() == [[False, True, True, True], [True, False, True, True]]
    assert pair_mask(1, 1).sum() == 0


def test_dino_loss_matches_algorithm_1_and_updates_the_center():
    torch.manual_seed(0)
    k = 7
    student = [torch.randn(4, k, requires_grad=True) for _ in range(5)]
    teacher = [torch.randn(4, k) for _ in range(2)]
    loss_fn = DINOLoss(k, student_temperature=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k))
    center = loss_fn.center[0].tolist()
    loss, diagnostics = loss_fn(student, teacher, teacher_temperature=0.05)
    assert loss.item() == pytest.approx(_dino_naive(student, teacher, center, 0.1, 0.05), rel=1e-5)

    expected_center = [0.9 * c + 0.1 * sum(row[j] for t in teacher for row in t.tolist()) / 8
                       for j, c in enumerate(center)]
    assert loss_fn.center[0].tolist() == pytest.approx(expected_center, rel=1e-5)

    entropies = [-sum(q * math.log(q) for q in _softmax([a - c for a, c in zip(row, center)], 0.05))
                 for t in teacher for row in t.tolist()]
    assert diagnostics["teacher_entropy"].item() == pytest.approx(sum(entropies) / len(entropies), rel=1e-4)
    # H(P_t, P_s) = h(P_t) + KL(P_t || P_s): the mean KL over the pairs is the loss minus the mean entropy
    assert diagnostics["kl"].item() == pytest.approx(loss.item() - diagnostics["teacher_entropy"].item(), rel=1e-4)

    loss.backward()
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert not any(t.requires_grad for t in teacher)


def test_dino_teacher_temperature_warms_up_linearly_then_stays():
    loss_fn = DINOLoss(4, teacher_temperature=0.07, warmup_teacher_temperature=0.04,
                       warmup_teacher_temperature_epochs=30)
    assert [loss_fn.teacher_temperature_at(e) for e in (0, 15, 29)] == pytest.approx([0.04, 0.055, 0.069], abs=1e-9)
    assert loss_fn.teacher_temperature_at(30) == loss_fn.teacher_temperature_at(300) == 0.07
    assert DINOLoss(4, warmup_teacher_temperature_epochs=0).teacher_temperature_at(0) == 0.07


def _dino_on_rank(rank, world_size, student, teacher):
    b = student[0].shape[0] // world_size
    rows = slice(rank * b, (rank + 1) * b)
    local = [s[rows].clone().requires_grad_(True) for s in student]
    loss_fn = DINOLoss(student[0].shape[1])
    loss, _ = loss_fn(local, [t[rows] for t in teacher], teacher_temperature=0.04)
    loss.backward()
    mean_loss = loss.detach().clone()
    torch.distributed.all_reduce(mean_loss)
    # DDP averages gradients over ranks: the local gradient / world size is the global-batch one.
    return mean_loss / world_size, [s.grad / world_size for s in local], loss_fn.center.clone()


def test_dino_two_ranks_match_global_batch():
    """Each rank's loss is over its local batch (DDP averages the gradients); the center is updated with
    the teacher mean of the global batch: 2 gloo ranks give one process's loss, gradients and center."""
    torch.manual_seed(0)
    student = [torch.randn(8, 6) for _ in range(4)]
    teacher = [torch.randn(8, 6) for _ in range(2)]
    reference = [s.clone().requires_grad_(True) for s in student]
    loss_fn = DINOLoss(6)
    ref_loss, _ = loss_fn(reference, teacher, teacher_temperature=0.04)
    ref_loss.backward()
    for rank, (loss, grads, center) in enumerate(run_on_ranks(_dino_on_rank, student, teacher)):
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, reference):
            torch.testing.assert_close(got, want.grad[rank * 4:(rank + 1) * 4], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(center, loss_fn.center, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- methods

def _model(method: str, tmp_path, *overrides: str):
    cfg = compose_train([f"method={method}", "data=digits", "data.resolution=32", f"data.batch_size={BATCH}",
                         "backbone.cifar_stem=false", *TINY_HEADS[method], *overrides], tmp_path)
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


class RandomViews(Dataset):
    """Random 'views' at the sizes a method's augmentation config gives them."""

    def __init__(self, length: int, sizes: list[int]):
        generator = torch.Generator().manual_seed(0)
        self.views = [torch.randn(length, 3, s, s, generator=generator) for s in sizes]
        self.labels = torch.randint(0, 10, (length,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return [v[i] for v in self.views], self.labels[i]


def _loader(model, batches: int) -> DataLoader:
    sizes = [view_resolution(v, model.cfg.augmentation) for v in model.cfg.augmentation.views]
    return DataLoader(RandomViews(batches * BATCH, sizes), batch_size=BATCH, drop_last=True)


def _fit(model, tmp_path, batches: int, callbacks=(), **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, precision="32-true",
                   default_root_dir=str(tmp_path), callbacks=list(callbacks), log_every_n_steps=1)
    options.update(kwargs)
    trainer = pl.Trainer(**options)
    trainer.fit(model, train_dataloaders=_loader(model, batches))
    return trainer


def test_simsiam_fixed_predictor_lr_is_not_scheduled(tmp_path):
    """fixed_predictor_lr: the predictor's parameter groups keep the base LR while the rest follow
    warm-up + cosine; without it, the predictor is scheduled like everything else."""
    model = _model("simsiam", tmp_path, "scheduler.warmup_epochs=0")
    trainer = _fit(model, tmp_path, batches=3, max_steps=3)
    groups = trainer.optimizers[0].param_groups
    constant = [g for g in groups if g.get("constant_lr")]
    assert {id(p) for g in constant for p in g["params"]} == {id(p) for p in model.predictor.parameters()}
    assert all(g["lr"] == g["initial_lr"] == pytest.approx(scaled_lr(model.cfg.optimizer, BATCH)) for g in constant)
    assert all(g["lr"] < g["initial_lr"] for g in groups if not g.get("constant_lr"))  # cosine-decayed to 0

    model = _model("simsiam", tmp_path, "method.fixed_predictor_lr=false")
    groups = _fit(model, tmp_path, batches=1, max_steps=1).optimizers[0].param_groups
    assert not any(g.get("constant_lr") for g in groups)


def test_vicreg_logs_its_terms_and_the_collapse_monitor(tmp_path):
    model = _model("vicreg", tmp_path)
    metrics = _fit(model, tmp_path, batches=2, max_steps=2).callback_metrics
    assert all(math.isfinite(metrics[f"train/vicreg_{t}_loss"].item()) for t in ("inv", "std", "cov"))
    d = model.cfg.method.expander.output_dim  # healthy ~1/sqrt(d), collapsed ~0 (see test_methods_ssl)
    assert 0.1 / math.sqrt(d) < metrics["train/z_std"].item()


def test_dino_teacher_never_receives_gradients_and_moves_by_ema(tmp_path):
    model = _model("dino", tmp_path)
    views, _ = next(iter(_loader(model, batches=1)))
    model.training_loss(views).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.head.mlp.parameters())

    model = _model("dino", tmp_path)
    student_before = [p.detach().clone() for p in model.online_encoder().parameters()]
    trainer = _fit(model, tmp_path, batches=1, max_steps=1)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in model.teacher.parameters())
    m = model.momentum_at(0)
    student_after = model.online_encoder().parameters()
    for before, after, teacher in zip(student_before, student_after, model.teacher.parameters()):
        torch.testing.assert_close(teacher, m * before + (1 - m) * after.detach())


class _Record(Callback):
    def __init__(self):
        self.temperatures, self.last_layers = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.temperatures.append(trainer.callback_metrics["train/dino_teacher_temperature"].item())

    def on_train_epoch_end(self, trainer, pl_module):
        self.last_layers.append([p.detach().clone() for p in pl_module.head.last_layer.parameters()])


def test_dino_temperature_schedule_in_steps_and_last_layer_frozen_for_the_first_epoch(tmp_path):
    """4 steps per epoch, warm-up over 1 epoch: the teacher temperature rises by (0.07 - 0.04) / 4 per
    optimiser step; the last layer does not move in epoch 0 (its gradient is dropped) and does in epoch 1."""
    model = _model("dino", tmp_path, "loss.warmup_teacher_temperature_epochs=1")
    last_before = [p.detach().clone() for p in model.head.last_layer.parameters()]
    mlp_before = [p.detach().clone() for p in model.head.mlp.parameters()]
    record = _Record()
    _fit(model, tmp_path, batches=4, callbacks=[record], max_epochs=2)
    assert record.temperatures == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07, 0.07, 0.07], abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(last_before, record.last_layers[0]))
    assert any(not torch.equal(a, b) for a, b in zip(last_before, record.last_layers[1]))
    assert any(not torch.equal(a, b) for a, b in zip(mlp_before, model.head.mlp.parameters()))
    norm = model.head.last_layer.parametrizations.weight.original0
    assert not norm.requires_grad and torch.equal(norm, torch.ones_like(norm))  # norm_last_layer


def test_dino_center_is_checkpointed(tmp_path):
    model = _model("dino", tmp_path)
    assert "loss_fn.center" in model.state_dict()
    assert model.state_dict()["loss_fn.center"].shape == (1, 64)


# ------------------------------------------------------------------------------- configs

@pytest.mark.parametrize("method,target,loss,augmentation", [
    ("simsiam", "SimSiam", "NegativeCosineLoss", "simsiam"),
    ("vicreg", "VICReg", "VICRegLoss", "vicreg"),
    ("dino", "DINO", "DINOLoss", "multicrop"),
])
def test_method_config_picks_its_loss_and_augmentation(method, target, loss, augmentation):
    cfg = compose_train([f"method={method}"])
    assert cfg.method._target_.endswith(target) and cfg.loss._target_.endswith(loss)
    assert cfg.augmentation.name == augmentation


def test_paper_defaults():
    simsiam = compose_train(["method=simsiam"]).method
    projector = simsiam.projector
    assert (projector.num_layers, projector.output_dim, projector.last_batch_norm) == (3, 2048, True)
    assert (simsiam.predictor.hidden_dim, simsiam.predictor.output_dim, simsiam.fixed_predictor_lr) == (512, 2048, True)
    vicreg = compose_train(["method=vicreg"])
    assert (vicreg.method.expander.hidden_dim, vicreg.method.expander.output_dim, vicreg.method.expander.num_layers) \
        == (8192, 8192, 3)
    assert (vicreg.loss.invariance_weight, vicreg.loss.variance_weight, vicreg.loss.covariance_weight,
            vicreg.loss.gamma) == (25.0, 25.0, 1.0, 1.0)
    dino = compose_train(["method=dino"])
    assert (dino.method.head.bottleneck_dim, dino.method.head.output_dim, dino.loss.output_dim) == (256, 65536, 65536)
    assert (dino.loss.student_temperature, dino.loss.warmup_teacher_temperature, dino.loss.teacher_temperature,
            dino.loss.warmup_teacher_temperature_epochs, dino.loss.center_momentum) == (0.1, 0.04, 0.07, 30, 0.9)
    method = dino.method
    assert (method.momentum, method.freeze_last_layer_epochs, method.head.norm_last_layer) == (0.996, 1, True)


@pytest.mark.parametrize("experiment,global_batch,optimizer,lr,epochs", [
    ("simsiam_cifar10", 512, "sgd", 0.03, 800),
    ("simsiam_imagenet", 512, "sgd", 0.05, 100),
    ("vicreg_cifar10", 256, "lars", 0.3, 1000),
    ("vicreg_imagenet", 2048, "lars", 0.2, 1000),
    ("dino_cifar10", 256, "lars", 0.3, 1000),
    ("dino_resnet50_imagenet", 4080, "lars", 0.3, 800),
])
def test_paper_recipes_compose(experiment, global_batch, optimizer, lr, epochs, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"data.root={tmp_path}"])
    trainer = cfg.trainer
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    assert cfg.data.batch_size * devices * trainer.num_nodes == global_batch
    assert (cfg.optimizer.name, cfg.optimizer.lr, trainer.max_epochs) == (optimizer, lr, epochs)
    assert any(tag.startswith("target_") for tag in cfg.tags)  # the published number it should reach


def test_two_view_methods_refuse_multicrop():
    for method in ("simsiam", "vicreg"):
        cfg = compose_train([f"method={method}", "augmentation=multicrop"])
        with pytest.raises(UserError, match="two views"):
            get_class(cfg.method._target_).check_config(cfg, 1)


# ------------------------------------------------------------------------------- through train.py

@pytest.mark.parametrize("method", ["simsiam", "vicreg"])
def test_tiny_run_writes_results_and_logs_the_collapse_monitor(method, tmp_path):
    results = train([f"method={method}", *TINY_RUN, *TINY_HEADS[method]], tmp_path)
    assert results["method"] == method and math.isfinite(results["knn_top1"])
    assert "train/z_std" in results["metrics"]
    if method == "vicreg":
        assert {"train/vicreg_inv_loss", "train/vicreg_std_loss", "train/vicreg_cov_loss"} <= set(results["metrics"])


def test_tiny_dino_run_with_multicrop_32_16_on_real_images(tmp_path, cifar_subset):
    results = train(["method=dino", "data=folder", f"data.root={cifar_subset}", "data.resolution=32", *TINY_RUN,
                     *TINY_HEADS["dino"]], tmp_path)
    assert results["method"] == "dino" and math.isfinite(results["knn_top1"])
    assert {"train/z_std", "train/dino_teacher_entropy", "train/dino_kl", "train/dino_teacher_temperature",
            "train/momentum"} <= set(results["metrics"])
