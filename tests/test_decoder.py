"""The decoder and upsamplers (unCLIP §2.1): UNet shapes and stored values, conditioning dropout, crops and full-size
sampling, degradations, guidance, files, errors, and a training smoke test on the Shapes world."""

import json

import pytest
import torch

from unclip.decoder import (
    PRESETS, Decoder, DecoderConfig, UNet, UNetConfig, Upsampler, UpsamplerConfig, bsr_degrade, gaussian_blur,
    jpeg_compress, load_decoder, random_blur, random_crop, save_decoder,
)
from unclip.diffusion import DiffusionConfig
from unclip.samplers import ddim_sample
from unclip.world import ShapesDataset

from perturb import perturb

# A UNet small enough for many forward passes: 16 px, two levels, attention at 8 px, z_i of 8, token states of 12.
SMALL = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                   head_channels=16, clip_dim=8, text_width=12)
SMALL_UP = UNetConfig(image_size=64, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(), clip_dim=None, text_width=None, low_res_channels=3)


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    return perturb(module, scale=scale, generator=torch.Generator().manual_seed(seed))


def _unet(cfg: UNetConfig = SMALL, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return _randomise(UNet(cfg), seed).eval()


def _inputs(b: int = 4, seed: int = 1, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    z = torch.randn(b, 8, generator=g)
    states = torch.randn(b, 6, 12, generator=g)
    mask = torch.arange(6)[None] < torch.tensor([2, 6, 4, 1][:b])[:, None]  # (B, 6) caption lengths 2, 6, 4, 1
    return x, t, z, states, mask


@pytest.mark.parametrize("learned_variance", [False, True])
@pytest.mark.parametrize("conditioning", ["both", "image", "text", "none"])
def test_unet_output_shapes(learned_variance, conditioning):
    cfg = SMALL.with_(learned_variance=learned_variance, clip_dim=8 if conditioning in ("both", "image") else None,
                      text_width=12 if conditioning in ("both", "text") else None)
    net = _unet(cfg)
    x, t, z, states, mask = _inputs()
    kw = {}
    if cfg.clip_dim:
        kw.update(image_embedding=z)
    if cfg.text_width:
        kw.update(text_states=states, text_mask=mask)
    channels = 6 if learned_variance else 3
    assert net(x, t, **kw).shape == (4, channels, 16, 16)
    # any multiple of 2 ** (levels - 1) runs, square or not
    assert net(torch.randn(4, 3, 8, 24), t, **kw).shape == (4, channels, 8, 24)


def test_fresh_unet_starts_at_zero_and_channels_last_agrees():
    torch.manual_seed(0)
    x, t, z, states, mask = _inputs()
    out = UNet(SMALL)(x, t, image_embedding=z, text_states=states, text_mask=mask)
    assert torch.equal(out, torch.zeros_like(out))  # ADM: zero-initialised output convolutions
    net, net_cl = _unet(SMALL), _unet(SMALL.with_(channels_last=True))
    assert net_cl.input_conv.weight.is_contiguous(memory_format=torch.channels_last)
    a = net(x, t, image_embedding=z, text_states=states, text_mask=mask)
    b = net_cl(x, t, image_embedding=z, text_states=states, text_mask=mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_unet_stored_output_slice():
    """A regression guard: these numbers were computed once with this seed; a change means the network changed."""
    net = _unet(SMALL.with_(learned_variance=True))
    x, t, z, states, mask = _inputs()
    with torch.no_grad():
        out = net(x, t, image_embedding=z, text_states=states, text_mask=mask)
    expected = torch.tensor(STORED_SLICE)
    assert torch.allclose(out[:2, :, 5, 7], expected, atol=1e-4), out[:2, :, 5, 7]


# out[:2, :, 5, 7] of the learned-variance SMALL UNet above (torch 2.13, CPU): 3 mean + 3 variance channels.
STORED_SLICE = [[-0.31745, -2.40592, -0.94075, -1.33936, 0.87804, -1.26309],
                [0.11566, -0.06600, -2.00706, -0.94289, 0.03937, -1.18962]]


def test_dropped_conditioning_ignores_its_input_and_padding_is_invisible():
    net = _unet()
    x, t, z, states, mask = _inputs()
    keep_image = torch.tensor([False, True, True, False])
    keep_text = torch.tensor([True, False, True, False])
    run = lambda z_, s_, m_: net(x, t, image_embedding=z_, text_states=s_, text_mask=m_, keep_image=keep_image,
                                 keep_text=keep_text)
    with torch.no_grad():
        base = run(z, states, mask)
        new_z = run(z + torch.randn_like(z), states, mask)
        other = torch.randn_like(states)
        new_text = run(z, other, torch.ones_like(mask))
        padded = states.clone()
        padded[~mask] = 100.0  # states past each caption's end
        new_pad = run(z, padded, mask)
    dropped_image, dropped_text = ~keep_image, ~keep_text
    assert torch.allclose(base[dropped_image], new_z[dropped_image], atol=1e-6)  # rows 0, 3 ignore z_i
    assert (base[keep_image] - new_z[keep_image]).abs().amax() > 1e-3  # rows 1, 2 read it
    assert torch.allclose(base[dropped_text], new_text[dropped_text], atol=1e-6)  # rows 1, 3 ignore caption & length
    assert (base[keep_text] - new_text[keep_text]).abs().amax() > 1e-3
    assert torch.allclose(base, new_pad, atol=1e-5)  # padding beyond the mask has no effect
    # A row with everything dropped is the same function of (x, t) whatever its conditioning was.
    assert torch.allclose(base[3], new_z[3]) and torch.allclose(base[3], new_text[3], atol=1e-6)
    # No caption at all reads as a dropped one (unCLIP §3 decodes variations from z_i alone).
    with torch.no_grad():
        no_caption = net(x, t, image_embedding=z, keep_image=keep_image)
    assert torch.allclose(no_caption[dropped_text], base[dropped_text], atol=1e-5)


def test_decoder_loss_draws_dropout_from_the_generator():
    torch.manual_seed(0)
    decoder = Decoder(DecoderConfig(unet=SMALL, p_drop_image=0.5, p_drop_text=0.5))
    _randomise(decoder)
    x, _, z, states, mask = _inputs()
    loss = lambda seed: decoder.loss(images=x.clamp(-1, 1), image_embedding=z, text_states=states, text_mask=mask,
                                     generator=torch.Generator().manual_seed(seed))
    assert loss(3).item() == loss(3).item() != loss(4).item()
    loss(3).backward()
    assert decoder.net.conditioning.null_image.grad.abs().sum() > 0  # the null embeddings are trained
    assert decoder.net.conditioning.null_text.grad.abs().sum() > 0


def test_guidance_is_uncond_plus_scale_times_difference_for_one_ddim_step():
    torch.manual_seed(0)
    decoder = Decoder(DecoderConfig(unet=SMALL.with_(learned_variance=True),
                                    diffusion=DiffusionConfig(learned_variance=True)))
    _randomise(decoder)
    decoder.eval()
    _, _, z, states, mask = _inputs()
    x_T = 0.3 * torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.full((4,), 10)
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        c = decoder.net(x_T, t, image_embedding=z, text_states=states, text_mask=mask, keep_image=yes, keep_text=yes)
        u = decoder.net(x_T, t, image_embedding=z, text_states=states, text_mask=mask, keep_image=no, keep_text=no)
        guided = decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=3.0)(x_T, t)
    assert torch.allclose(guided[:, :3], u[:, :3] + 3.0 * (c[:, :3] - u[:, :3]), atol=1e-5)
    assert torch.allclose(guided[:, 3:], c[:, 3:], atol=1e-6)  # the variance channels follow the conditional branch
    # One DDIM step from t = 10 to the data: x0 of the guided output, clamped.
    manual = decoder.diffusion.predict(u + 3.0 * (c - u), x_T, t).x0.clamp(-1, 1)
    sampled = decoder.sample(image_embedding=z, text_states=states, text_mask=mask, steps=[10], guidance_scale=3.0,
                             threshold=None, x_T=x_T)
    assert torch.allclose(sampled, manual, atol=1e-5)
    direct = ddim_sample(decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=3.0),
                         decoder.diffusion, x_T, steps=[10])
    assert torch.allclose(sampled, direct.clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("drops, keep_image, keep_text", [("caption", True, False), ("image", False, True)])
def test_guidance_drops_names_what_the_unconditional_branch_loses(drops, keep_image, keep_text):
    decoder = Decoder(DecoderConfig(unet=SMALL))
    _randomise(decoder)
    decoder.eval()
    _, _, z, states, mask = _inputs()
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.full((4,), 500)
    yes = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        c = decoder.net(x_T, t, image_embedding=z, text_states=states, text_mask=mask, keep_image=yes, keep_text=yes)
        u = decoder.net(x_T, t, image_embedding=z, text_states=states, text_mask=mask,
                        keep_image=yes if keep_image else ~yes, keep_text=yes if keep_text else ~yes)
        both = decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=2.5)(x_T, t)
        guided = decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=2.5,
                                  guidance_drops=drops)(x_T, t)
    assert torch.allclose(guided, u + 2.5 * (c - u), atol=1e-5)
    assert not torch.allclose(guided, both, atol=1e-3)  # a different branch from the default's


def test_guidance_drops_refuses_unknown_names_and_inputs_the_decoder_lacks():
    _, _, z, states, mask = _inputs()
    decoder = Decoder(DecoderConfig(unet=SMALL))
    with pytest.raises(ValueError, match="'text'"):
        decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_drops="text")
    image_only = Decoder(DecoderConfig(unet=SMALL.with_(text_width=None)))
    with pytest.raises(ValueError, match="no caption input to drop"):
        image_only.sample(image_embedding=z, steps=1, guidance_scale=2.0, guidance_drops="caption")


def test_autoguidance_pushes_the_decoder_away_from_its_guide_given_the_whole_conditioning():
    """guide + s * (decoder - guide), each given z_i and the caption (Karras et al. 2024); a self-conditioned guide
    carries its own estimate, and a guide that does not fit is refused by name."""
    decoder = _randomise(Decoder(DecoderConfig(unet=SMALL)), seed=0).eval()
    guide_cfg = DecoderConfig(unet=SMALL.with_(model_channels=8, head_channels=8, self_condition=True))
    guide = _randomise(Decoder(guide_cfg), seed=1).eval()
    _, _, z, states, mask = _inputs()
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.full((4,), 600)
    yes = torch.ones(4, dtype=torch.bool)
    cond = dict(image_embedding=z, text_states=states, text_mask=mask, keep_image=yes, keep_text=yes)
    with torch.no_grad():
        d, g = decoder.net(x_T, t, **cond), guide.net(x_T, t, **cond)
        guided = decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=2.5,
                                  guide=guide)
        assert torch.allclose(guided(x_T, t), g + 2.5 * (d - g), atol=1e-5)
        # the guide's second call reads its own first x0 estimate (self-conditioning), as a lone guide's would
        g2 = guide.net(x_T, t, **cond, self_cond=guide._estimate(g, x_T, t))
        assert torch.allclose(guided(x_T, t), g2 + 2.5 * (d - g2), atol=1e-5)
        one = decoder.sample(image_embedding=z, text_states=states, text_mask=mask, steps=[10], x_T=x_T,
                             guidance_scale=1.0, guide=guide)
        alone = decoder.sample(image_embedding=z, text_states=states, text_mask=mask, steps=[10], x_T=x_T)
    assert torch.equal(one, alone)  # scale 1: the decoder alone
    other = Decoder(DecoderConfig(unet=SMALL.with_(clip_dim=4)))
    with pytest.raises(ValueError, match=r"z_i width \(8 here, 4 there\)"):
        decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=2.0, guide=other)
    with pytest.raises(ValueError, match="no caption to drop|none to drop"):
        decoder.denoiser(image_embedding=z, text_states=states, text_mask=mask, guidance_scale=2.0, guide=guide,
                         guidance_drops="caption")


def test_upsampler_trains_on_crops_and_samples_at_full_size():
    cfg = UpsamplerConfig(unet=SMALL_UP, low_res_size=16, crop_size=16, degradation="blur")
    torch.manual_seed(0)
    up = Upsampler(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    seen = []
    up.net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    up.loss(images=images, generator=g).backward()
    assert seen == [(2, 3, 16, 16)]  # trained on 16 px crops of the 64 px targets
    out = up.sample(low_res=images[:, :, ::4, ::4], steps=2, generator=g)
    assert out.shape == (2, 3, 64, 64) and seen[-1] == (2, 3, 64, 64) and out.abs().max() <= 1
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\)"):
        up.loss(images=images, low_res=images[:, :, ::2, ::2], generator=g)


def test_upsampler_unet_is_local():
    """Without attention the UNet is convolutional: an output pixel's gradient lies in a window around it (up to
    GroupNorm's image-wide statistics, a floor of ~0.5% of the peak at 128 px), so a network trained on crops
    runs at any size."""
    net = _unet(SMALL_UP)
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    low = torch.randn(1, 3, 128, 128, requires_grad=True)
    net(x, torch.tensor([500]), low_res=low)[0, :, 64, 64].sum().backward()
    grad = x.grad[0].abs().sum(0)  # (128, 128)
    window = slice(64 - 22, 64 + 23)  # this UNet's 3x3 convolutions see about 20 px to each side
    near, far = grad[window, window], grad.clone()
    far[window, window] = 0
    assert near.max() > 0 and far.max() < 2e-2 * near.max(), (near.max(), far.max())
    assert low.grad[0, :, window, window].abs().max() > 0  # the low-res conditioning is read locally too


def test_gaussian_blur_keeps_the_mean_and_removes_high_frequencies_monotonically():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    energies = []
    for sigma in (0.0, 0.5, 1.0, 2.0, 4.0):
        y = gaussian_blur(x, sigma)
        assert y.shape == x.shape
        assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)
        spectrum = torch.fft.fft2(y).abs() ** 2
        f = torch.fft.fftfreq(32).abs()
        high = (f[:, None] > 0.25) | (f[None, :] > 0.25)  # the upper half of the frequencies
        energies.append(spectrum[..., high].sum().item())
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    per_sample = gaussian_blur(x, torch.tensor([0.5, 2.0]))  # each sample its own sigma
    assert torch.allclose(per_sample[1:], gaussian_blur(x[1:], 2.0), atol=1e-6)
    assert torch.allclose(per_sample[:1], gaussian_blur(x[:1], 0.5), atol=1e-3)  # shares the wider kernel's radius
    blurred = random_blur(x, sigma_range=(0.4, 0.6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(blurred, random_blur(x, sigma_range=(0.4, 0.6), generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="-1"):
        gaussian_blur(x, -1.0)


def test_bsr_degradation_is_in_range_seeded_and_changes_the_image():
    g = torch.Generator().manual_seed(0)
    x = gaussian_blur(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, 1.0)
    a = bsr_degrade(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, bsr_degrade(x, torch.Generator().manual_seed(1)))
    assert not torch.allclose(a, bsr_degrade(x, torch.Generator().manual_seed(2)))
    assert (a - x).abs().mean() > 0.01


def test_jpeg_changes_the_image_more_at_low_quality():
    g = torch.Generator().manual_seed(0)
    x = ((torch.rand(2, 3, 32, 32, generator=g) * 2 - 1) * 255).round() / 255  # on (near) 8-bit levels
    errors = [(jpeg_compress(x, q) - x).abs().mean().item() for q in (95, 50, 10)]
    assert errors[0] > 2 / 255  # even at quality 95 the encoding is lossy on noise
    assert errors[0] < errors[1] < errors[2], errors
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(x, 0)


def test_random_crop_cuts_matching_regions():
    g = torch.Generator().manual_seed(0)
    lo = torch.randn(5, 3, 8, 8, generator=g)
    hi = lo.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # (5, 3, 32, 32): each low-res pixel a 4x4 block
    hi_crop, lo_crop = random_crop(hi, lo, 16, generator=torch.Generator().manual_seed(1))
    assert hi_crop.shape == (5, 3, 16, 16) and lo_crop.shape == (5, 3, 4, 4)
    assert torch.equal(hi_crop, lo_crop.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    assert len({tuple(c.flatten()[:3].tolist()) for c in lo_crop}) > 1  # not all at one place
    with pytest.raises(ValueError, match="crop_size 10"):
        random_crop(hi, lo, 10)


def test_configs_round_trip_through_json_and_reject_bad_values():
    for cfg in PRESETS.values():
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="attention resolution 12"):
        UNetConfig(image_size=32, attention_resolutions=(12,))
    with pytest.raises(ValueError, match="attention_resolutions must be empty"):
        UpsamplerConfig(unet=SMALL_UP.with_(attention_resolutions=(32,)), low_res_size=16, crop_size=16)
    with pytest.raises(ValueError, match="learned_variance"):
        DecoderConfig(unet=SMALL.with_(learned_variance=True))
    with pytest.raises(ValueError, match="crop_size 18"):
        UpsamplerConfig(unet=SMALL_UP, low_res_size=16, crop_size=18)
    assert UNetConfig(channel_mult=[1, 2, 3], attention_resolutions=[16, 8]) == UNetConfig()
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({"channels": 3})


def test_tiny_presets_have_the_intended_sizes():
    count = lambda cfg: sum(p.numel() for p in UNet(cfg.unet).parameters())
    assert 2e6 < count(PRESETS["tiny"]) < 4e6
    assert 1e6 < count(PRESETS["tiny-up-128"]) < 3e6


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    decoder = _randomise(Decoder(DecoderConfig(unet=SMALL))).eval()
    up = _randomise(Upsampler(UpsamplerConfig(unet=SMALL_UP, low_res_size=16, crop_size=16))).eval()
    save_decoder(tmp_path / "dec", decoder)
    save_decoder(tmp_path / "up", up)
    dec2, up2 = load_decoder(tmp_path / "dec"), load_decoder(tmp_path / "up")
    assert type(dec2) is Decoder and type(up2) is Upsampler and dec2.config == decoder.config
    x, t, z, states, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(decoder.net(x, t, image_embedding=z, text_states=states, text_mask=mask),
                           dec2.net(x, t, image_embedding=z, text_states=states, text_mask=mask))
        low = torch.randn(1, 3, 64, 64)
        assert torch.equal(up.net(low, t[:1], low_res=low), up2.net(low, t[:1], low_res=low))
    record = json.loads((tmp_path / "dec" / "decoder_config.json").read_text())
    assert record["kind"] == "decoder"
    record["config"]["unet"]["num_res_blocks"] = 2  # a config that does not describe these weights
    (tmp_path / "dec" / "decoder_config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="missing"):
        load_decoder(tmp_path / "dec")


def test_bad_inputs_name_the_value():
    torch.manual_seed(0)
    decoder = Decoder(DecoderConfig(unet=SMALL))
    x, t, z, states, mask = _inputs()
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\), got \(4, 3, 32, 32\)"):
        decoder.loss(images=torch.zeros(4, 3, 32, 32), image_embedding=z, text_states=states, text_mask=mask)
    no_z = decoder.net(x, t, text_states=states, text_mask=mask)  # no z_i: the null embedding in every row
    dropped = decoder.net(x, t, image_embedding=z, text_states=states, text_mask=mask,
                          keep_image=torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(no_z, dropped, atol=1e-6)
    with pytest.raises(ValueError, match="15x16 is not a multiple of 2"):
        decoder.net(torch.zeros(4, 3, 15, 16), t, image_embedding=z, text_states=states, text_mask=mask)
    with pytest.raises(ValueError, match=r"image_embedding must be \(B=4, clip_dim=8\), got \(4, 9\)"):
        decoder.net(x, t, image_embedding=torch.zeros(4, 9), text_states=states, text_mask=mask)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        decoder.sample(image_embedding=z, text_states=states, text_mask=mask, steps=1, sampler="euler")


def test_decoder_loss_falls_on_shapes():
    """30 Adam steps on 16 Shapes images at 16 px: the loss on fixed evaluation draws (t, noise, dropout) falls."""
    data = ShapesDataset("train", size=16, length=16)
    images = torch.stack([data[i][0] for i in range(16)])
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(images.flatten(1) @ torch.randn(3 * 16 * 16, 8, generator=g), dim=-1)
    states, mask = torch.randn(16, 6, 12, generator=g), torch.ones(16, 6, dtype=torch.bool)
    torch.manual_seed(0)
    decoder = Decoder(DecoderConfig(unet=SMALL))
    evaluate = lambda: sum(decoder.loss(images=images, image_embedding=z, text_states=states, text_mask=mask,
                                        generator=torch.Generator().manual_seed(100 + s)).item() for s in range(4)) / 4
    before = evaluate()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    for _ in range(30):
        loss = decoder.loss(images=images, image_embedding=z, text_states=states, text_mask=mask, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.5 * before, (before, after)  # measured: 1.00 -> 0.26
