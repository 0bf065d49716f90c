"""DINO at the default precision on 32-px images (the new user's `method=dino data.resolution=32`): multi-crop
sends 16-px local crops through ResNet-18's standard stem, 1x1 maps before layer4, where the CPU bf16 kernel's
weight gradient was NaN or ~1e30 (tests/models/test_small_map_conv.py); the step's gradients stay finite."""

import torch
from conftest import compose_train
from hydra.utils import get_class


def test_dino_multicrop_steps_at_bf16_on_32px_keep_finite_gradients(tmp_path):
    torch.manual_seed(0)
    cfg = compose_train(
        [
            "method=dino",
            "data=cifar10",
            "backbone.cifar_stem=false",
            "method.head.output_dim=256",
            "method.head.hidden_dim=256",
            "method.head.bottleneck_dim=64",
        ],
        tmp_path,
    )
    model = get_class(cfg.method._target_)(cfg)
    sizes = [cfg.data.resolution] * 2 + [cfg.augmentation.local_resolution] * 6
    assert sizes[-1] == 16
    optimizer = torch.optim.SGD(model.parameters(), lr=0.15, momentum=0.9)
    for step in range(4):
        views = [torch.randn(32, 3, size, size) for size in sizes]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.training_loss(views).loss
        optimizer.zero_grad()
        loss.backward()
        conv = model.backbone.layer4[0].conv1.weight.grad
        assert torch.isfinite(loss), step
        assert torch.isfinite(conv).all() and conv.abs().max() < 1.0, (step, conv.abs().max())
        optimizer.step()
