"""z_i augmentation in decoder training (DecoderConfig.image_embedding_noise, unclip/decoder/augment.py): the noised
embedding's norm and cosine, its determinism, what the loss hands the network, and the config."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from unclip.decoder import Decoder, DecoderConfig, UNetConfig
from unclip.decoder.augment import noised_embedding
from unclip.decoder.config import network_config
from unclip.diffusion import DiffusionConfig

SMALL = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                   head_channels=16, clip_dim=8, text_width=12)


@pytest.mark.parametrize("sigma", [0.1, 0.34, 1.0])
def test_noised_embedding_keeps_the_norm_and_lands_at_the_predicted_cosine(sigma):
    z = 3.0 * F.normalize(torch.randn(20000, 256, generator=torch.Generator().manual_seed(0)), dim=-1)
    moved = noised_embedding(z, sigma, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(moved.norm(dim=-1), torch.full((20000,), 3.0), atol=1e-5)
    cosine = F.cosine_similarity(moved, z, dim=-1).mean().item()
    assert cosine == pytest.approx(1 / math.sqrt(1 + sigma ** 2), abs=0.005)


def test_noised_embedding_is_seeded_and_zero_sigma_is_the_identity():
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    a, b = (noised_embedding(z, 0.5, generator=torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, noised_embedding(z, 0.5, generator=torch.Generator().manual_seed(8)))
    assert noised_embedding(z, 0.0) is z


def test_noised_embedding_names_bad_input():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"sigma must be a finite number >= 0, got {bad}"):
            noised_embedding(torch.ones(2, 4), bad)
    with pytest.raises(ValueError, match=re.escape("z must be (B, d), got (4,)")):
        noised_embedding(torch.ones(4), 0.3)


def _embedding_the_network_reads(config: DecoderConfig, z: torch.Tensor, monkeypatch) -> torch.Tensor:
    torch.manual_seed(0)
    decoder = Decoder(config)
    seen, forward = [], decoder.net.forward

    def capture(x, t, **cond):
        seen.append(cond["image_embedding"])
        return forward(x, t, **cond)

    monkeypatch.setattr(decoder.net, "forward", capture)
    decoder.loss(images=torch.zeros(len(z), 3, 16, 16), image_embedding=z,
                 text_states=torch.zeros(len(z), 5, 12), generator=torch.Generator().manual_seed(2))
    return seen[0]


def test_the_loss_hands_the_network_the_noised_embedding_only_when_asked(monkeypatch):
    config = DecoderConfig(unet=SMALL, diffusion=DiffusionConfig(schedule="cosine", steps=100, prediction="v"))
    z = F.normalize(torch.randn(64, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert torch.equal(_embedding_the_network_reads(config, z, monkeypatch), z)
    noised = _embedding_the_network_reads(config.with_(image_embedding_noise=0.34), z, monkeypatch)
    assert torch.allclose(noised.norm(dim=-1), torch.ones(64), atol=1e-5)
    cosine = F.cosine_similarity(noised, z, dim=-1)
    assert (cosine < 0.9999).all() and 0.9 < cosine.mean().item() < 0.99  # about 0.946 at d = 8, 64 rows
    assert torch.equal(noised, _embedding_the_network_reads(config.with_(image_embedding_noise=0.34), z, monkeypatch))


def test_config_round_trips_is_training_only_and_names_a_bad_value():
    assert "image_embedding_noise" not in DecoderConfig(unet=SMALL).to_dict()  # old files stay as they were
    config = DecoderConfig(unet=SMALL, image_embedding_noise=0.34)
    assert DecoderConfig.from_dict(config.to_dict()) == config
    assert network_config(config) == network_config(DecoderConfig(unet=SMALL))  # --init-from and soups accept it
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"image_embedding_noise must be a finite number >= 0, got {bad}"):
            DecoderConfig(unet=SMALL, image_embedding_noise=bad)
    with pytest.raises(ValueError, match="image_embedding_noise=0.3 noises z_i, but this decoder reads no z_i"):
        DecoderConfig(unet=SMALL.with_(clip_dim=None), image_embedding_noise=0.3)
