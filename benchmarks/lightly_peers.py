"""The peer side of the peer table (benchmarks/peer_table.py): SimCLR, MoCo v2, BYOL, Barlow Twins, SwAV and
NNCLR as a plain PyTorch loop from lightly's components (requirements-peers.txt), with the recipe of lightly's
own CIFAR-10 benchmark (docs/source/getting_started/benchmarks/cifar10_benchmark.py in lightly's
repository: ResNet-18, batch 128, kNN k=200 T=0.1):

- all but SwAV and VICReg: SGD lr 0.06 x batch/128, momentum 0.9, weight decay 5e-4 on every trainable parameter;
  all: CosineAnnealingLR over the epochs stepped once per epoch; each view through the backbone alone.
- SimCLR: SimCLRTransform(cj_strength=0.5, gaussian_blur=0), SimCLRProjectionHead(512, 512, 128),
  NTXentLoss() (temperature 0.5).
- MoCo v2: the same transform, MoCoProjectionHead(512, 512, 128), update_momentum 0.99 on backbone
  and head before each step, NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128)), symmetric
  loss 0.5 (L(x0, x1) + L(x1, x0)).
- BYOL: BYOLTransform of BYOLView1/2Transform(gaussian_blur=0), BYOLProjectionHead(512, 1024, 256),
  BYOLPredictionHead(256, 1024, 256), update_momentum 0.99 (fixed), NegativeCosineSimilarity,
  0.5 (L(p0, z1) + L(p1, z0)).
- Barlow Twins: the BYOL transform, the benchmark's 2-layer ProjectionHead 512-2048(BN, ReLU)-2048,
  BarlowTwinsLoss() (lambda 5e-3).
- SwAV: SwaVTransform of 2 crops at the resolution, min scale 0.14 (cj_strength=0.5, gaussian_blur=0),
  SwaVProjectionHead(512, 512, 128), SwaVPrototypes(128, 512) normalised before each step, SwaVLoss()
  (no queue, prototypes never frozen), Adam lr 1e-3 x batch/128, weight decay 1e-6.
- VICReg: the BYOL transform, VICRegProjectionHead(512, 2048, 2048, 2 layers), VICRegLoss(), LARS lr 0.3 x
  batch/128, weight decay 1e-4, momentum 0.9 (the benchmark's 20 warm-up epochs are not kept: the
  shared cosine).
- NNCLR: the SimCLR transform, the benchmark's 2-layer ProjectionHead 512-2048(BN, ReLU)-256(BN),
  NNCLRPredictionHead(256, 4096, 256), NNMemoryBankModule of 4096 projections (updated with view 1's),
  NTXentLoss() (temperature 0.5), 0.5 (L(NN(z0), p1) + L(NN(z1), p0)).

Adapted, the same for both sides of the table:
- backbone: the project's `build_backbone` from the recipe (torchvision ResNet-18, fc = Identity, the
  recipe's stem) instead of lightly's ResNetGenerator (CIFAR stem), built first after seeding with the
  run's seed, so both sides start from the same weights. MoCo: no batch_shuffle, which the benchmark
  pairs with its 8-way SplitBatchNorm; with one ordinary BatchNorm batch shuffling changes nothing.
- resolution, batch, precision (bf16 autocast where the project's trainer uses it), channels_last
  inputs, data (torchvision ImageFolder of <data_root>/train), loader workers (persistent, as the
  project's), and the number of epochs the cosine schedule spans: the recipe's
  (conf/experiment/<method>_cpu_short.yaml); training stops at the wall-clock budget or after
  those epochs, whichever comes first.
- evaluation: the project's `Evaluator` and `TrainingClock` (peer_table.py), not lightly's
  BenchmarkModule kNN callback.

    python benchmarks/lightly_peers.py method=byol seed=0 budget_s=300 eval_every_s=60 out=clock.json
"""

from __future__ import annotations

import copy
import json
import sys
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss, VICRegLoss
from lightly.models.modules import NNMemoryBankModule, heads
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform, SwaVTransform
from lightly.utils.lars import LARS
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peer_table import DEFAULTS, Evaluator, TrainingClock  # noqa: E402
from selfsup.data.datamodule import build_data  # noqa: E402
from selfsup.models.backbones import build_backbone  # noqa: E402

BASE_LR, BASE_BATCH, MOMENTUM, WEIGHT_DECAY = 0.06, 128, 0.9, 5e-4  # the benchmark's SGD


def simclr_transform(resolution: int):
    return SimCLRTransform(input_size=resolution, cj_strength=0.5, gaussian_blur=0.0)


def byol_transform(resolution: int):
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=resolution, gaussian_blur=0.0),
        view_2_transform=BYOLView2Transform(input_size=resolution, gaussian_blur=0.0),
    )


class Peer(nn.Module):
    """A peer: its transform, backbone, heads and `training_loss(x0, x1)`; by default the criterion on the two
    views' projections, and the benchmark's SGD unless it names its own optimizer."""

    def __init__(self, transform, backbone: nn.Module):
        super().__init__()
        self.transform, self.backbone = transform, backbone

    def project(self, x):
        return self.projection_head(self.backbone(x))

    def training_loss(self, x0, x1):
        return self.criterion(self.project(x0), self.project(x1))

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [p for p in self.parameters() if p.requires_grad],
            lr=BASE_LR * batch_size / BASE_BATCH,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
        )


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


class MomentumPeer(Peer):
    """A peer with frozen momentum copies of its backbone and projection head, which every step first moves
    towards the trained ones with lightly's update_momentum at a fixed 0.99 (the benchmark's MoCo and BYOL),
    then scores with `momentum_loss(x0, x1)`."""

    def add_momentum_copies(self, projection_head_momentum: nn.Module | None = None) -> None:
        """Call after the heads are built; `projection_head_momentum`: a head that cannot be deep-copied."""
        self.backbone_momentum = frozen_copy(self.backbone)
        self.projection_head_momentum = (
            frozen_copy(self.projection_head) if projection_head_momentum is None else projection_head_momentum
        )

    def training_loss(self, x0, x1):
        update_momentum(self.backbone, self.backbone_momentum, 0.99)
        update_momentum(self.projection_head, self.projection_head_momentum, 0.99)
        return self.momentum_loss(x0, x1)

    def project_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


class SimCLR(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(simclr_transform(resolution), backbone)
        self.projection_head = heads.SimCLRProjectionHead(backbone.output_dim, 512, 128)
        self.criterion = NTXentLoss()


class MoCoV2(MomentumPeer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(simclr_transform(resolution), backbone)
        self.projection_head = heads.MoCoProjectionHead(backbone.output_dim, 512, 128)
        self.add_momentum_copies()
        self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))

    def momentum_loss(self, x0, x1):
        def loss(query, key):  # the memory bank takes each key in turn: query x0 first
            return self.criterion(self.project(query), self.project_momentum(key))

        return 0.5 * (loss(x0, x1) + loss(x1, x0))


class BYOL(MomentumPeer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(byol_transform(resolution), backbone)
        self.projection_head = heads.BYOLProjectionHead(backbone.output_dim, 1024, 256)
        self.prediction_head = heads.BYOLPredictionHead(256, 1024, 256)
        self.add_momentum_copies()
        self.criterion = NegativeCosineSimilarity()

    def momentum_loss(self, x0, x1):
        p0, p1 = (self.prediction_head(self.project(x)) for x in (x0, x1))
        z0, z1 = (self.project_momentum(x) for x in (x0, x1))
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class BarlowTwins(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(byol_transform(resolution), backbone)
        self.projection_head = heads.ProjectionHead(
            [(backbone.output_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)), (2048, 2048, None, None)]
        )
        self.criterion = BarlowTwinsLoss()


class SwAV(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(
            SwaVTransform(
                crop_sizes=(resolution,),
                crop_counts=(2,),
                crop_min_scales=(0.14,),
                crop_max_scales=(1.0,),
                cj_strength=0.5,
                gaussian_blur=0.0,
            ),
            backbone,
        )
        self.projection_head = heads.SwaVProjectionHead(backbone.output_dim, 512, 128)
        self.prototypes = heads.SwaVPrototypes(128, 512)
        self.criterion = SwaVLoss()

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3 * batch_size / BASE_BATCH, weight_decay=1e-6)

    def training_loss(self, x0, x1):
        self.prototypes.normalize()
        scores = [self.prototypes(nn.functional.normalize(self.project(x), dim=1)) for x in (x0, x1)]
        return self.criterion(scores, [])


class NNCLR(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(simclr_transform(resolution), backbone)
        self.projection_head = heads.ProjectionHead(
            [
                (backbone.output_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
                (2048, 256, nn.BatchNorm1d(256), None),
            ]
        )
        self.prediction_head = heads.NNCLRPredictionHead(256, 4096, 256)
        self.memory_bank = NNMemoryBankModule(size=(4096, 256))
        self.criterion = NTXentLoss()

    def training_loss(self, x0, x1):
        z0, z1 = (self.project(x) for x in (x0, x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        nn0 = self.memory_bank(z0.detach(), update=False)
        nn1 = self.memory_bank(z1.detach(), update=True)
        return 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))


class SimSiam(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(simclr_transform(resolution), backbone)
        self.projection_head = heads.SimSiamProjectionHead(backbone.output_dim, 512, 512)
        self.prediction_head = heads.SimSiamPredictionHead(512, 128, 512)
        self.criterion = NegativeCosineSimilarity()

    def training_loss(self, x0, x1):
        z0, z1 = (self.project(x) for x in (x0, x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


class VICReg(Peer):
    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(byol_transform(resolution), backbone)
        self.projection_head = heads.VICRegProjectionHead(backbone.output_dim, 2048, 2048, num_layers=2)
        self.criterion = VICRegLoss()

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        # The benchmark's: "Training diverges without LARS" (with SGD 0.06 its loss is NaN by step 12 here).
        return LARS(self.parameters(), lr=0.3 * batch_size / BASE_BATCH, weight_decay=1e-4, momentum=MOMENTUM)


class MoCoV3(BYOL):
    """lightly's MoCo v3 example on a ResNet: BYOL's heads, momentum encoder and symmetric loss, with in-batch
    InfoNCE in place of the negative cosine."""

    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(backbone, resolution)
        self.criterion = NTXentLoss(temperature=0.2)


class DINO(MomentumPeer):
    """lightly's DINO on a CIFAR ResNet (batch_norm head), two 32-px views as the project's dino_cpu_short."""

    def __init__(self, backbone: nn.Module, resolution: int):
        super().__init__(byol_transform(resolution), backbone)
        head = partial(heads.DINOProjectionHead, backbone.output_dim, 512, 128, 1024, batch_norm=True)
        self.projection_head, teacher_head = head(), head()  # weight_norm: no deepcopy
        teacher_head.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(teacher_head)
        self.add_momentum_copies(teacher_head)
        self.criterion = DINOLoss(output_dim=1024, warmup_teacher_temp_epochs=0)

    def momentum_loss(self, x0, x1):
        views = [x0, x1]
        teacher = [self.project_momentum(x) for x in views]
        student = [self.project(x) for x in views]
        return self.criterion(teacher, student)


PEERS = {
    "simclr": SimCLR,
    "mocov2": MoCoV2,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
    "swav": SwAV,
    "nnclr": NNCLR,
    "simsiam": SimSiam,
    "vicreg": VICReg,
    "mocov3": MoCoV3,
    "dino": DINO,
}


def compose_recipe(method: str, data_root: str, seed: int):
    """The project's config for `train.py experiment=<method>_cpu_short data.root=... seed=...`."""
    from selfsup.config import compose_train

    return compose_train([f"experiment={method}_cpu_short", f"data.root={data_root}", f"seed={seed}"])


def train(method: str, seed: int, budget_s: float, eval_every_s: float, data_root: str) -> dict:
    cfg = compose_recipe(method, data_root, seed)
    pl.seed_everything(seed, workers=True, verbose=False)  # as train.py: then the data, then the backbone
    cfg, datamodule = build_data(cfg)
    backbone = build_backbone(**cfg.backbone)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = PEERS[method](backbone, cfg.data.resolution).to(device)
    dataset = torchvision.datasets.ImageFolder(str(Path(data_root) / "train"), transform=model.transform)
    workers = datamodule.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    optimizer = model.optimizer(cfg.data.batch_size)
    epochs = cfg.trainer.max_epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    bf16 = "bf16" in str(cfg.trainer.precision)
    memory_format = torch.channels_last if cfg.backbone.channels_last else torch.contiguous_format
    evaluator = Evaluator(datamodule, cfg.eval.knn, bf16)
    clock = TrainingClock(evaluator, budget_s, eval_every_s)

    model.train()
    clock.start(backbone)
    step, spent, diverged_at = 0, False, None
    for _ in range(epochs):
        for (x0, x1), _ in loader:
            x0, x1 = (x.to(device, non_blocking=True).contiguous(memory_format=memory_format) for x in (x0, x1))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model.training_loss(x0, x1)
            if not torch.isfinite(loss):  # lightly's loops have no guard: stop, and score the last finite weights
                diverged_at, spent = step + 1, True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if spent := clock.step_done(step, backbone):
                break
        if spent:
            break
        scheduler.step()
    clock.finish(step, backbone)
    return {**clock.summary(), "linear_top1": evaluator.linear_top1(), "diverged_at_step": diverged_at}


def main(argv: list[str] | None = None) -> None:
    options = {
        "method": None,
        "seed": "0",
        "budget_s": DEFAULTS["budget_s"],
        "eval_every_s": DEFAULTS["eval_every_s"],
        "data_root": DEFAULTS["data_root"],
        "out": None,
    }
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"unknown option {arg!r}: use key=value with key one of {', '.join(options)}")
        options[key] = value
    if options["method"] not in PEERS or not options["out"]:
        raise SystemExit(f"method= one of {', '.join(PEERS)} and out=<json path> are required")
    summary = train(
        options["method"],
        int(options["seed"]),
        float(options["budget_s"]),
        float(options["eval_every_s"]),
        options["data_root"],
    )
    Path(options["out"]).write_text(json.dumps(summary, indent=2) + "\n")
    diverged = (
        f" (loss non-finite at step {summary['diverged_at_step']}: stopped there)"
        if summary["diverged_at_step"]
        else ""
    )
    print(
        f"kNN top-1 {summary['knn_top1_at_init']:.4f} -> {summary['knn_top1']:.4f} in {summary['steps']} steps, "
        f"{summary['train_seconds']:.0f} s{diverged}; summary: {options['out']}"
    )


if __name__ == "__main__":
    main()
