"""Foreground-weighted decoder loss (DecoderConfig.foreground_weight, unclip/decoder/weighting.py): the mask read
from the border colour, the weights' ratio and mean, the weighted mean in the diffusion loss, and the config."""

import re

import pytest
import torch

from unclip.decoder import Decoder, DecoderConfig, UNetConfig
from unclip.decoder.weighting import foreground_mask, foreground_weights
from unclip.diffusion import DiffusionConfig, GaussianDiffusion
from unclip.world import ShapesDataset

from perturb import perturb

SMALL = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                   head_channels=16, clip_dim=8, text_width=12)


def _scene(background: float, value: float) -> torch.Tensor:
    """(1, 3, 8, 8): a uniform background with a 2x2 square of `value` in the red channel only at rows/cols 3-4."""
    x = torch.full((1, 3, 8, 8), background)
    x[0, 0, 3:5, 3:5] = value
    return x


def test_mask_is_the_largest_channel_distance_from_the_border_colour_halved():
    white = foreground_mask(_scene(1.0, -1.0))  # white background, a cyan square (red channel off)
    assert white.shape == (1, 1, 8, 8)
    assert torch.equal(white[0, 0, 3:5, 3:5], torch.ones(2, 2))
    white[0, 0, 3:5, 3:5] = 0
    assert torch.count_nonzero(white) == 0
    half = foreground_mask(_scene(-1.0, 0.0))  # black background, a half-strength square: half an object
    assert torch.allclose(half[0, 0, 3:5, 3:5], torch.full((2, 2), 0.5))
    assert foreground_mask(torch.full((2, 3, 5, 5), 0.3)).max() < 1e-6  # no object, no mask (up to rounding)


def test_mask_agrees_with_rendered_scenes_objects():
    images = torch.stack([ShapesDataset(split="train", size=32, length=16)[i][0] for i in range(16)])
    mask = foreground_mask(images)
    background = (images - images[..., :1, :1]).abs().amax(dim=1, keepdim=True) < 1e-6  # the corner pixel's colour
    assert mask[background].max() < 0.05  # the border is uniform, so its mean is the background colour
    assert (mask[~background] > 0).all()
    assert 0.01 < mask.mean() < 0.3


@pytest.mark.parametrize("weight", [0.0, 4.0, 10.0])
def test_weights_make_an_object_pixel_count_one_plus_weight_times_a_background_pixel(weight):
    w = foreground_weights(torch.cat([_scene(1.0, -1.0), _scene(-1.0, 1.0)]), weight)
    assert w.mean(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])  # each image keeps its share of the batch
    assert (w[:, :, 3, 3] / w[:, :, 0, 0]).flatten().tolist() == pytest.approx([1 + weight] * 2)
    with pytest.raises(ValueError, match="-1"):
        foreground_weights(_scene(1.0, -1.0), -1.0)


def test_rows_left_out_weigh_one_and_an_image_s_weights_do_not_depend_on_the_batch():
    w = foreground_weights(torch.cat([_scene(1.0, -1.0), _scene(1.0, -1.0)]), 4.0, rows=torch.tensor([True, False]))
    assert (w[0, :, 3, 3] / w[0, :, 0, 0]).item() == pytest.approx(5.0)
    assert torch.all(w[1] == 1)
    # an empty scene beside a scene with an object: in a batch of two, as in two batches of one (so gradient
    # accumulation still equals a larger batch)
    empty, square = torch.full((1, 3, 8, 8), 1.0), _scene(1.0, -1.0)
    together = foreground_weights(torch.cat([empty, square]), 4.0)
    assert torch.equal(together, torch.cat([foreground_weights(empty, 4.0), foreground_weights(square, 4.0)]))
    assert torch.allclose(together[0], torch.ones(1, 8, 8))


def test_training_losses_weigh_each_element_before_the_mean():
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", steps=100, prediction="v"))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([5, 50, 95])
    model = lambda x, tt: x * 0.5  # any function of x_t
    plain = diffusion.training_losses(model, x0, t, noise)["mse"]
    assert torch.allclose(diffusion.training_losses(model, x0, t, noise, weights=torch.ones(1, 1, 8, 8))["mse"], plain)
    w = torch.rand(3, 1, 8, 8, generator=g)
    alpha, sigma = diffusion.alpha_sigma(t, x0)
    by_hand = (w * (model(diffusion.q_sample(x0, t, noise), t) - (alpha * noise - sigma * x0)) ** 2).mean((1, 2, 3))
    assert torch.allclose(diffusion.training_losses(model, x0, t, noise, weights=w)["mse"], by_hand)
    for bad in (torch.ones(3), torch.ones(2, 1, 8, 8)):  # (B,) would broadcast over the width
        with pytest.raises(ValueError, match=re.escape(f"weights {tuple(bad.shape)} must have one row or one per")):
            diffusion.training_losses(model, x0, t, noise, weights=bad)


def test_decoder_loss_with_foreground_weight_changes_only_scenes_with_objects(monkeypatch):
    config = DecoderConfig(unet=SMALL, diffusion=DiffusionConfig(schedule="cosine", steps=100, prediction="v"))
    torch.manual_seed(0)
    plain = perturb(Decoder(config), scale=0.1, generator=torch.Generator().manual_seed(0))
    weighted = Decoder(config.with_(foreground_weight=9.0))
    weighted.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    z, states = torch.randn(4, 8, generator=g), torch.randn(4, 5, 12, generator=g)
    loss = lambda decoder, images: decoder.loss(images=images, image_embedding=z, text_states=states,
                                                generator=torch.Generator().manual_seed(2)).item()
    uniform = torch.full((4, 3, 16, 16), -1.0)
    assert loss(weighted, uniform) == pytest.approx(loss(plain, uniform), rel=1e-6)
    scenes = uniform.clone()
    scenes[:, :, 4:8, 4:8] = 1.0
    assert loss(weighted, scenes) != pytest.approx(loss(plain, scenes), rel=1e-3)
    # weights kept to t < 0.6 T (60 of 100 steps): rows at t = 10 and 59 are weighed, rows at 60 and 90 are not
    below = Decoder(config.with_(foreground_weight=9.0, foreground_weight_below=0.6))
    below.load_state_dict(plain.state_dict())
    seen, training_losses = {}, below.diffusion.training_losses

    def capture(*args, weights=None, **kwargs):
        seen["w"] = weights
        return training_losses(*args, weights=weights, **kwargs)

    monkeypatch.setattr(below.diffusion, "sample_timesteps", lambda n, **_: torch.tensor([10, 59, 60, 90]))
    monkeypatch.setattr(below.diffusion, "training_losses", capture)
    loss(below, scenes)
    weighed = [bool((row != 1).any()) for row in seen["w"]]
    assert weighed == [True, True, False, False]


def test_config_keeps_old_files_unchanged_round_trips_and_names_a_bad_weight():
    assert not {"foreground_weight", "foreground_weight_below"} & set(DecoderConfig(unet=SMALL).to_dict())
    config = DecoderConfig(unet=SMALL, foreground_weight=4.0, foreground_weight_below=0.6)
    assert DecoderConfig.from_dict(config.to_dict()) == config
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"foreground_weight must be a finite number >= 0, got {bad}"):
            DecoderConfig(unet=SMALL, foreground_weight=bad)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"foreground_weight_below must be in \\(0, 1\\], got {bad}"):
            DecoderConfig(unet=SMALL, foreground_weight=4.0, foreground_weight_below=bad)
