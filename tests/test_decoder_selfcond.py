"""Self-conditioning (UNetConfig.self_condition; Chen, Zhang & Hinton 2022, Analog Bits Algorithms 1-2): the UNet
reads its previous x0 estimate, training feeds it half the time, sampling carries it from step to step, and it can
be grown onto a trained decoder without changing what that computes."""

import json

import pytest
import torch

from unclip.decoder import Decoder, DecoderConfig, UNetConfig
from unclip.decoder.grow import grow_unet
from unclip.decoder.unet import UNet
from unclip.diffusion import DiffusionConfig

from perturb import perturb

SMALL = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=16,
                   attention_resolutions=(8,), clip_dim=8, text_width=12)
V_ZERO_SNR = DiffusionConfig(schedule="cosine", steps=100, prediction="v", zero_terminal_snr=True)


def _trained_looking(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded weights with the zero-initialised layers made non-zero, as training makes them."""
    torch.manual_seed(seed)
    return perturb(module).eval()


def _cond(b: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(image_embedding=torch.randn(b, 8, generator=g), text_states=torch.randn(b, 5, 12, generator=g),
                text_mask=torch.ones(b, 5, dtype=torch.bool))


def _decoder(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(unet=SMALL.with_(self_condition=True), diffusion=V_ZERO_SNR)
    return _trained_looking(Decoder(cfg), seed)


def test_the_unet_reads_the_estimate_as_extra_input_channels_and_zeros_when_there_is_none():
    net = _trained_looking(UNet(SMALL.with_(self_condition=True)))
    assert net.input_conv.in_channels == 6
    g = torch.Generator().manual_seed(2)
    x, t, estimate = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([5, 50, 99]), torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, **_cond()), net(x, t, **_cond(), self_cond=torch.zeros_like(x)))
        assert not torch.allclose(net(x, t, **_cond()), net(x, t, **_cond(), self_cond=estimate))
    with pytest.raises(ValueError, match=r"self_cond must have x's shape \(3, 3, 16, 16\), got \(3, 3, 8, 8\)"):
        net(x, t, **_cond(), self_cond=torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match="without self_condition"):
        _trained_looking(UNet(SMALL))(x, t, **_cond(), self_cond=estimate)


def test_grown_onto_a_trained_unet_it_computes_the_same_until_trained():
    small = _trained_looking(UNet(SMALL))
    torch.manual_seed(3)
    grown = grow_unet(UNet(SMALL.with_(self_condition=True, channel_mult=(1, 3))), small)
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0, 40, 99])
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, **_cond(), self_cond=torch.randn(3, 3, 16, 16, generator=g)),
                                   small(x, t, **_cond()), rtol=0, atol=1e-5)
    # the estimate's weights start at zero but learn
    grown(x, t, **_cond(), self_cond=torch.randn(3, 3, 16, 16, generator=g)).square().mean().backward()
    assert torch.equal(grown.input_conv.weight[:, 3:].detach(), torch.zeros(16, 3, 3, 3))
    assert grown.input_conv.weight.grad[:, 3:].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot grow a self-conditioned UNet into one without"):
        grow_unet(UNet(SMALL), _trained_looking(UNet(SMALL.with_(self_condition=True))))


def test_training_feeds_the_estimate_to_about_half_the_batches_without_gradient_through_it():
    decoder = _decoder()
    seen = []  # per network call: (self_cond given?, grad enabled?)

    def record(module, args, kwargs):
        seen.append((kwargs.get("self_cond") is not None, torch.is_grad_enabled()))

    decoder.net.register_forward_pre_hook(record, with_kwargs=True)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(40):
        seen.clear()
        decoder.loss(images=images, **_cond(), generator=g).backward()
        batches.append(list(seen))
    fed = [b for b in batches if len(b) == 2]
    assert all(b == [(False, True)] for b in batches if len(b) == 1)
    assert all(b == [(False, False), (True, True)] for b in fed)  # the estimate first, without gradient
    assert 10 <= len(fed) <= 30  # a fair coin per batch (40 batches)
    # what is fed is the first pass's x0 (clipped), at the same x_t and t
    calls = []
    decoder.net.register_forward_hook(lambda m, a, kw, out: calls.append((a[0], a[1], kw.get("self_cond"), out)),
                                      with_kwargs=True)
    while len(calls) < 2:
        calls.clear()
        decoder.loss(images=images, **_cond(), generator=g)
    (x_t, t, _, first), (x_t2, t2, fed_estimate, _) = calls
    assert torch.equal(x_t, x_t2) and torch.equal(t, t2)
    torch.testing.assert_close(fed_estimate, decoder.diffusion.predict(first, x_t, t, threshold="static").x0)
    # the same generator state gives the same coin, so a resumed run repeats its batches exactly
    a = decoder.loss(images=images, **_cond(), generator=torch.Generator().manual_seed(7))
    b = decoder.loss(images=images, **_cond(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sampling_carries_each_branchs_own_estimate_to_the_next_step_and_starts_afresh():
    decoder = _decoder()
    fed, outs = [], []
    decoder.net.register_forward_pre_hook(lambda m, a, kw: fed.append(kw.get("self_cond")), with_kwargs=True)
    decoder.net.register_forward_hook(lambda m, a, out: outs.append(out))
    model_fn = decoder.denoiser(**_cond(), guidance_scale=3.0)
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(3, 3, 16, 16, generator=g), torch.randn(3, 3, 16, 16, generator=g)
    t1, t2 = torch.full((3,), 99), torch.full((3,), 60)
    with torch.no_grad():
        model_fn(x1, t1)
        model_fn(x2, t2)
    assert fed[0] is None  # the first step has no estimate
    # the second step reads, in each branch (conditional rows first), that branch's own x0 from the first step, clipped
    # as the sampler clips it: what training fed each row
    both = torch.cat([x1, x1])
    expected = decoder.diffusion.predict(outs[0], both, torch.cat([t1, t1]), threshold="static").x0
    torch.testing.assert_close(fed[1], expected)
    assert not torch.allclose(expected[:3], expected[3:])  # the two branches' estimates differ
    # each sample() builds its own denoiser: the same seed gives the same images twice
    a = decoder.sample(**_cond(), steps=5, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    b = decoder.sample(**_cond(), steps=5, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    for bad in (torch.randn(4, 3, 16, 16), torch.randn(3, 3, 8, 8)):  # neither B nor 2B rows; another image size
        shape = rf"\({2 * len(bad)}, 3, {bad.shape[-1]},"  # guided: both branches, 2B rows
        with pytest.raises(ValueError, match=rf"for 3 images was called with x of shape {shape}"):
            model_fn(bad, torch.full((len(bad),), 30))


def test_under_a_guidance_interval_each_branch_still_carries_its_own_estimate():
    """Outside the interval only the conditional rows run; they carry theirs, and the unconditional rows read the
    estimate of their last guided call (zeros before any)."""
    decoder = _decoder()
    fed, outs = [], []
    decoder.net.register_forward_pre_hook(lambda m, a, kw: fed.append(kw.get("self_cond")), with_kwargs=True)
    decoder.net.register_forward_hook(lambda m, a, out: outs.append(out))
    assert decoder.guided_timesteps((0.4, 0.7)) == (40, 69)  # fractions of t / (T - 1), T = 100
    model_fn = decoder.denoiser(**_cond(), guidance_scale=3.0, guidance_interval=(0.4, 0.7))
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(3, 3, 16, 16, generator=g) for _ in range(4)]
    ts = [torch.full((3,), t) for t in (99, 60, 30, 45)]  # outside, inside, outside, inside
    with torch.no_grad():
        for x, t in zip(xs, ts):
            model_fn(x, t)

    def x0(out, x, t):
        return decoder.diffusion.predict(out, x, t, threshold="static").x0

    assert [len(o) for o in outs] == [3, 6, 3, 6] and fed[0] is None
    first = x0(outs[0], xs[0], ts[0])
    torch.testing.assert_close(fed[1], torch.cat([first, torch.zeros_like(first)]))
    second = x0(outs[1], torch.cat([xs[1], xs[1]]), torch.cat([ts[1], ts[1]]))
    torch.testing.assert_close(fed[2], second[:3])
    third = x0(outs[2], xs[2], ts[2])
    torch.testing.assert_close(fed[3], torch.cat([third, second[3:]]))


def test_without_carrying_the_denoiser_is_a_function_of_x_and_t_and_inversion_round_trips():
    decoder = _decoder()
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(3, 3, 16, 16, generator=g), torch.full((3,), 50)
    fixed = decoder.denoiser(**_cond(), guidance_scale=1.0, carry_estimate=False)
    carrying = decoder.denoiser(**_cond(), guidance_scale=1.0)
    with torch.no_grad():
        assert torch.equal(fixed(x, t), fixed(x, t))
        assert not torch.equal(carrying(x, t), carrying(x, t))  # the second call reads the first one's estimate
    # DDIM inversion (what the manipulations do, unCLIP §3) retraced by the sampler: the image comes back
    from unclip.samplers import ddim_invert
    images = torch.rand(3, 3, 16, 16, generator=g) * 1.6 - 0.8
    with torch.no_grad():
        x_T = ddim_invert(decoder.denoiser(**_cond(), carry_estimate=False), decoder.diffusion, images, steps=20,
                          fixed_point_iters=3)
        back = decoder.sample(**_cond(), steps=20, sampler="ddim", x_T=x_T, carry_estimate=False)
    assert (back - images).abs().max() < 0.1


def test_old_run_configs_read_with_the_new_fields_as_defaults_and_upsamplers_refuse_it():
    from unclip.decoder import UpsamplerConfig
    from unclip.decoder.train import RECIPES, _read_model_config
    record = {"stage": "decoder", **RECIPES["tiny-16-rb1"].model.to_dict(), "clip": "runs/clip"}
    old = json.loads(json.dumps(record))
    for name in ("self_condition", "image_mlp_width"):  # a run begun before these fields existed
        del old["unet"][name]
    assert old != record and _read_model_config(old) == record
    grown = json.loads(json.dumps(record))
    grown["unet"]["self_condition"] = True
    assert _read_model_config(grown) != record  # a real difference still shows
    with pytest.raises(ValueError, match="self_condition is for the decoder"):
        UpsamplerConfig(unet=UNetConfig(clip_dim=None, text_width=None, attention_resolutions=(), low_res_channels=3,
                                        image_size=64, self_condition=True), diffusion=V_ZERO_SNR, low_res_size=32,
                        crop_size=32)
    with pytest.raises(ValueError, match=r"self_condition must be true or false, got 1"):
        UNetConfig(self_condition=1)


def test_the_self_conditioned_recipe_grows_from_the_shipped_decoders_and_trains_like_its_fifth_cycle():
    from unclip.decoder import train as decoder_train
    recipes = decoder_train.RECIPES
    assert recipes["tiny-16-rb1-sc-ft4"].train == recipes["tiny-16-rb1-ft4"].train
    small = recipes["tiny-16-rb1"].model.unet
    assert recipes["tiny-16-rb1-sc-ft4"].model.unet == small.with_(self_condition=True)
    assert recipes["tiny-16-rb1-sc-ft4"].model.diffusion == recipes["tiny-16-rb1"].model.diffusion
