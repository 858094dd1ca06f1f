"""The priors (issue 6): shapes, masks, guidance, PCA and quantiser round trips, best-of-k, training, files."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from unclip.clip import CLIP, preset, save_clip
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.prior import (
    PCA, ARPrior, ARPriorConfig, DiffusionPrior, DiffusionPriorConfig, Quantizer, image_embeddings, load_prior,
    save_prior,
)
from unclip.prior import train as prior_train
from unclip.prior.embed import text_conditioning
from unclip.prior.masks import causal_prefix_mask
from unclip.tokenizer import Tokenizer

CAPTIONS = ["a red circle", "two small blue squares on a black background",
            "a green cross to the left of a pink star", "an image of a large yellow diamond at the top"]
SMALL = dict(width=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    model = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1)).eval()
    model.tokenizer = tokenizer
    return model


def _cond(clip, captions=CAPTIONS):
    tokens = clip.tokenizer(captions)
    states, mask = text_conditioning(clip, tokens)
    return F.normalize(clip.encode_text_tokens(tokens), dim=-1).detach(), states, mask


def _diffusion_prior(seed=0, **kw):
    torch.manual_seed(seed)
    return DiffusionPrior(DiffusionPriorConfig(**(SMALL | kw))).eval()


def _ar_prior(n=256, seed=0):
    torch.manual_seed(seed)
    z_i = F.normalize(torch.randn(n, 64) @ torch.randn(64, 64), dim=-1)
    z_t = F.normalize(torch.randn(n, 64), dim=-1)
    return ARPrior.from_embeddings(ARPriorConfig(**SMALL, buckets=64, similarity_buckets=8, max_components=12),
                                   image_embedding=z_i, text_embedding=z_t).eval()


def test_mask_is_causal_and_hides_padding():
    text_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    mask = causal_prefix_mask(text_mask, 3)  # (2, 1, 7, 7)
    assert mask.shape == (2, 1, 7, 7)
    i, j = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    assert not mask[:, 0][:, j > i].any()  # no position attends to a later one
    assert not mask[0, 0, :, 2:4].any() and mask[1, 0, 3, 2:4].all()  # padding is never a key
    assert mask[:, 0, :, 0].all()  # every row keeps the start token


def test_diffusion_prior_shapes_and_padding_independence(clip):
    prior = _diffusion_prior()
    z_t, states, mask = _cond(clip)
    x, t = torch.randn(4, 64), torch.tensor([0, 10, 500, 999])
    out = prior.net(x, t, text_embedding=z_t, text_states=states, text_mask=mask)
    assert out.shape == (4, 64)
    garbage = states.clone()
    garbage[~mask] = 100.0  # states past the end-of-text token must not matter
    assert torch.allclose(out, prior.net(x, t, text_embedding=z_t, text_states=garbage, text_mask=mask), atol=1e-5)
    changed = states.clone()
    changed[0, 1] += 1.0  # a real token does
    assert not torch.allclose(out[0], prior.net(x, t, text_embedding=z_t, text_states=changed, text_mask=mask)[0])


def test_dropped_conditioning_ignores_the_caption(clip):
    prior = _diffusion_prior()
    z_t, states, mask = _cond(clip)
    x, t = torch.randn(1, 64).expand(4, -1), torch.full((4,), 300)
    drop = torch.zeros(4, dtype=torch.bool)
    uncond = prior.net(x, t, text_embedding=z_t, text_states=states, text_mask=mask, keep=drop)
    assert torch.allclose(uncond, uncond[:1].expand(4, -1), atol=1e-5)  # four captions, one answer
    cond = prior.net(x, t, text_embedding=z_t, text_states=states, text_mask=mask, keep=~drop)
    assert not torch.allclose(cond[0], cond[1])


def test_guided_sample_is_the_guidance_formula(clip):
    """One DDIM step from a fixed x_T: the guided x0 is uncond + s (cond - uncond), exactly."""
    prior = _diffusion_prior()
    z_t, states, mask = _cond(clip)
    ones = torch.ones(4, dtype=torch.bool)
    x_T = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), prior.diffusion.num_steps - 1)
    kw = dict(text_embedding=z_t, text_states=states, text_mask=mask)
    c, u = prior.net(x_T, t, keep=ones, **kw), prior.net(x_T, t, keep=~ones, **kw)
    out = prior.sample(steps=1, sampler="ddim", guidance_scale=3.0, best_of=1,
                       generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(out, F.normalize(u + 3.0 * (c - u), dim=-1), atol=1e-5)


def test_best_of_k_keeps_the_candidate_nearest_z_t(clip):
    prior = _diffusion_prior()
    z_t, states, mask = _cond(clip)
    k = 3
    best = prior.sample(text_embedding=z_t, text_states=states, text_mask=mask, steps=4, best_of=k,
                        generator=torch.Generator().manual_seed(7))
    rep = lambda x: x.repeat_interleave(k, dim=0)
    candidates = prior.sample(text_embedding=rep(z_t), text_states=rep(states), text_mask=rep(mask), steps=4,
                              best_of=1, generator=torch.Generator().manual_seed(7)).reshape(4, k, -1)
    dots = (candidates @ z_t[:, :, None]).squeeze(-1)  # (4, k)
    assert torch.allclose(best, candidates[torch.arange(4), dots.argmax(1)], atol=1e-6)
    assert ((best * z_t).sum(-1) >= dots.max(1).values - 1e-6).all()
    assert (dots.max(1).values > dots.min(1).values).all()  # the choice was a real one


def test_pca_round_trip_and_component_count():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:5]  # 5 orthonormal directions in 16-D
    data = (torch.randn(2000, 5, generator=g) * torch.tensor([5.0, 4, 3, 2, 1])) @ basis + 0.5
    pca = PCA.fit(data, variance_kept=0.999)
    assert pca.num_components == 5
    error = (pca.inverse(pca.transform(data)) - data).norm(dim=1).max()
    assert error < 1e-3, f"reconstruction error {error}"
    two = PCA.fit(data, variance_kept=0.7)  # 25 + 16 of 55 = 75% > 70%: two components suffice
    assert two.num_components == 2
    assert torch.allclose(two.variance, torch.tensor([25.0, 16.0]), rtol=0.1)
    with pytest.raises(ValueError, match="N >= 2"):
        PCA.fit(torch.randn(1, 4))


def test_quantizer_round_trip_is_within_half_a_bucket():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(5000, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1])
    q = Quantizer.fit(data, buckets=1024, tail=0.0)
    codes = q.encode(data)
    assert codes.min() >= 0 and codes.max() <= 1023
    width = (q.high - q.low) / 1024
    assert ((q.decode(codes) - data).abs() <= width / 2 + 1e-6).all()
    assert torch.equal(q.encode(q.decode(codes)), codes)
    assert q.encode(torch.full((1, 3), 1e6)).eq(1023).all() and q.encode(torch.full((1, 3), -1e6)).eq(0).all()
    with pytest.raises(ValueError, match="codes must lie"):
        q.decode(torch.full((1, 3), 1024))


def test_ar_prior_is_causal_over_codes_and_samples_unit_vectors(clip):
    prior = _ar_prior()
    k = prior.config.components
    z_t, states, mask = _cond(clip)
    codes = torch.randint(0, 64, (4, k - 1), generator=torch.Generator().manual_seed(0))
    sim = torch.zeros(4, dtype=torch.long)
    kw = dict(similarity=sim, text_embedding=z_t, text_states=states, text_mask=mask)
    logits = prior.logits(codes, **kw)
    assert logits.shape == (4, k, 64)
    later = codes.clone()
    later[:, 5:] = (later[:, 5:] + 1) % 64  # change codes 6.. : outputs 0..5 (predicting codes 1..6) must not move
    moved = prior.logits(later, **kw)
    assert torch.allclose(logits[:, :6], moved[:, :6], atol=1e-5) and not torch.allclose(logits[:, 6:], moved[:, 6:])
    z = image_embeddings("ar", clip=clip, captions=CAPTIONS, prior=prior, top_k=8, guidance_scale=2.0,
                         generator=torch.Generator().manual_seed(0))
    assert z.shape == (4, 64) and torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(text_embedding=z_t, text_states=states, text_mask=mask, temperature=0)


def test_prior_kinds(clip):
    z_t, _, _ = _cond(clip)
    assert torch.allclose(image_embeddings("text-embedding", clip=clip, captions=CAPTIONS), z_t, atol=1e-6)
    assert image_embeddings("none", clip=clip, captions=CAPTIONS) is None
    with pytest.raises(ValueError, match="needs a DiffusionPrior"):
        image_embeddings("diffusion", clip=clip, captions=CAPTIONS, prior=_ar_prior())
    with pytest.raises(ValueError, match="unknown prior kind 'clip'"):
        image_embeddings("clip", clip=clip, captions=CAPTIONS)


def test_save_and_load_round_trip(tmp_path, clip):
    z_t, states, mask = _cond(clip)
    for prior in (_diffusion_prior(), _ar_prior()):
        save_prior(tmp_path / "p", prior)
        back = load_prior(tmp_path / "p")
        assert type(back) is type(prior) and back.config == prior.config
        sd, sd_back = prior.state_dict(), back.state_dict()
        assert all(torch.equal(sd[k], sd_back[k]) for k in sd)
    with pytest.raises(FileNotFoundError, match="prior_config.json"):
        load_prior(tmp_path)


def test_diffusion_prior_learns_a_caption_to_embedding_map(clip):
    """A tiny prior trained on a toy map z_i = normalise(R z_t) predicts z_i far better than chance."""
    torch.manual_seed(0)
    rot = torch.linalg.qr(torch.randn(64, 64))[0]
    z_t, states, mask = _cond(clip)
    z_i = F.normalize(z_t @ rot, dim=-1)
    prior = DiffusionPrior(DiffusionPriorConfig(**SMALL, cond_drop_prob=0.0))
    opt = torch.optim.AdamW(prior.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = prior.loss(image_embedding=z_i, text_embedding=z_t, text_states=states, text_mask=mask, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    prior.eval()
    pred = prior.sample(text_embedding=z_t, text_states=states, text_mask=mask, steps=16, best_of=1, generator=g)
    cos = (pred * z_i).sum(-1)
    assert cos.mean() > 0.8, cos


def test_train_prior_end_to_end_and_resume(tmp_path, clip, monkeypatch):
    save_clip(tmp_path / "clip", clip)
    for kind, cfg in (("diffusion", DiffusionPriorConfig(**SMALL)), ("autoregressive",
                                                                     ARPriorConfig(**SMALL, max_components=8))):
        train = dataclasses.replace(prior_train.RECIPES[kind]["tiny"].train, steps=4, batch_size=8,
                                    checkpoint_every=2, warmup_steps=1)
        monkeypatch.setitem(prior_train.RECIPES[kind], "micro", prior_train.PriorRecipe(model=cfg, train=train,
                                                                                         pairs=24))
        run = tmp_path / kind
        whole = prior_train.train_prior(kind=kind, preset_name="micro", clip_dir=tmp_path / "clip", run_dir=run,
                                        progress=False)
        prior_train.train_prior(kind=kind, preset_name="micro", clip_dir=tmp_path / "clip", run_dir=tmp_path / "b",
                                max_steps=2, progress=False)
        split = prior_train.train_prior(kind=kind, preset_name="micro", clip_dir=tmp_path / "clip",
                                        run_dir=tmp_path / "b", progress=False)
        a, b = load_prior(whole).state_dict(), load_prior(split).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), kind
        assert (run / "embeddings.safetensors").is_file()
        (tmp_path / "b").rename(tmp_path / f"b-{kind}")
