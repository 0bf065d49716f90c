"""The pretext decoders and the context encoder's discriminator: output shapes."""

from __future__ import annotations

import pytest
import torch

from selfsup.models.decoders import PatchDiscriminator, UpConvDecoder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [16, 32, 64, 96, 128, 224])
@pytest.mark.parametrize("out_channels", [2, 3])
def test_decoder_output_shape_from_vector(size, out_channels):
    decoder = UpConvDecoder(in_dim=32, out_channels=out_channels, image_size=size, width=32, min_width=8)
    assert decoder(torch.randn(2, 32)).shape == (2, out_channels, size, size)


@pytest.mark.parametrize("map_size", [4, 7])
def test_decoder_output_shape_from_feature_map(map_size):
    decoder = UpConvDecoder(in_dim=16, out_channels=3, image_size=64, width=32, from_map=True)
    assert decoder(torch.randn(2, 16, map_size, map_size)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="from_map"):
        UpConvDecoder(in_dim=16, out_channels=3, image_size=64)(torch.randn(2, 16, 4, 4))


@pytest.mark.parametrize("size", [32, 64, 96, 128])
def test_discriminator_gives_one_logit_per_image(size):
    critic = PatchDiscriminator(in_channels=3, image_size=size, width=8)
    assert critic(torch.randn(3, 3, size, size)).shape == (3,)
