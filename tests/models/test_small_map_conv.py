"""The CPU bf16 weight gradient of a strided 3x3 convolution on a 1x1 map (ResNet layer4 on 16-px views)
is wrong in PyTorch's kernel: the backbone computes those convolutions in fp32 (SmallMapSafeConv2d)."""

import pytest
import torch
from torch import nn

from selfsup.models.backbones import SmallMapSafeConv2d, build_backbone


def weight_grad(conv: nn.Conv2d, x: torch.Tensor, grad_out_seed: int, autocast: bool) -> torch.Tensor:
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    y.float().backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_out_seed)) * 1e-3)
    return conv.weight.grad.clone()


def test_resnet_strided_convs_are_guarded_and_keep_their_weights():
    backbone = build_backbone("resnet18")
    guarded = [name for name, m in backbone.named_modules() if isinstance(m, SmallMapSafeConv2d)]
    assert guarded == ["conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]
    assert set(build_backbone("resnet18").state_dict()) == set(backbone.state_dict())


@pytest.mark.parametrize("batch", [16, 64, 256])
def test_layer4_weight_gradient_on_a_1x1_map_is_right_under_cpu_bf16(batch):
    torch.manual_seed(batch)
    conv = build_backbone("resnet18", channels_last=False).layer4[0].conv1
    x = torch.randn(batch, conv.in_channels, 1, 1)
    reference = weight_grad(conv, x, batch, autocast=False)
    guarded = weight_grad(conv, x, batch, autocast=True)
    assert torch.isfinite(guarded).all()
    torch.testing.assert_close(guarded, reference, rtol=1e-4, atol=1e-7)  # fp32 there: the same numbers
