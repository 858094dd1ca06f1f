"""The diffusion prior's own token embedding (DiffusionPriorConfig.token_embedding): it starts as the prior without
it, tells apart captions whose CLIP states are the same, checks its input, trains and reloads."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from test_prior import clip  # noqa: F401 (the tiny seeded CLIP fixture)
from unclip.clip import save_clip
from unclip.prior import DiffusionPrior, DiffusionPriorConfig, image_embeddings, load_prior, save_prior
from unclip.prior import train as prior_train
from unclip.prior.embed import text_conditioning

SMALL = dict(width=32, layers=2, heads=2)
SIDES = ["a red circle on the left", "a red circle on the right"]


def _prior(clip, seed=0, **kw):
    torch.manual_seed(seed)
    return DiffusionPrior(DiffusionPriorConfig(**SMALL, vocab_size=clip.config.vocab_size, **kw))


def _inputs(clip, captions=SIDES):
    tokens = clip.tokenizer(captions)
    states, mask = text_conditioning(clip, tokens)
    return tokens, states, mask


def test_a_grown_token_embedding_starts_as_the_prior_without_it(clip):
    plain, grown = _prior(clip).eval(), _prior(clip, seed=1, token_embedding=True).eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["net.token_embedding.weight", "net.token_proj.bias", "net.token_proj.weight"]
    assert unexpected == []
    tokens, states, mask = _inputs(clip)
    z_t, x, t = F.normalize(torch.randn(2, 64), dim=-1), torch.randn(2, 64), torch.tensor([10, 900])
    kw = dict(text_embedding=z_t, text_states=states, text_mask=mask)
    with torch.no_grad():
        assert torch.equal(grown.net(x, t, text_tokens=tokens, **kw), plain.net(x, t, **kw))
        grown.net.token_proj.weight.normal_()
        assert not torch.allclose(grown.net(x, t, text_tokens=tokens, **kw), plain.net(x, t, **kw))


def test_token_ids_tell_apart_captions_whose_clip_states_are_equal(clip):
    """Both captions are given the first one's CLIP states and z_t: only the token ids differ. Trained to map them
    to two different z_i, the prior with a token embedding learns each; without one it cannot tell them apart."""
    tokens, states, mask = _inputs(clip)
    states, mask = states[:1].expand(2, -1, -1), mask[:1].expand(2, -1)
    z_t = F.normalize(torch.randn(1, 64, generator=torch.Generator().manual_seed(3)), dim=-1).expand(2, -1)
    z_i = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(4)), dim=-1)  # (2, E)
    kw = dict(text_embedding=z_t, text_states=states, text_mask=mask, text_tokens=tokens)
    prior = _prior(clip, token_embedding=True, cond_drop_prob=0.0)
    opt, g = torch.optim.AdamW(prior.parameters(), lr=3e-3), torch.Generator().manual_seed(0)
    for _ in range(200):
        loss = prior.loss(image_embedding=z_i.repeat(4, 1), generator=g,
                          **{k: v.repeat(4, *[1] * (v.ndim - 1)) for k, v in kw.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 8 draws per caption from different noise: each lands on its own caption's z_i, not on the other's
    draws = prior.eval().sample(steps=8, best_of=1, generator=torch.Generator().manual_seed(1),
                                **{k: v.repeat_interleave(8, dim=0) for k, v in kw.items()})  # (16, E)
    cos = (draws @ z_i.T).reshape(2, 8, 2)  # (caption, draw, target)
    assert (cos[0, :, 0] > cos[0, :, 1] + 0.5).all() and (cos[1, :, 1] > cos[1, :, 0] + 0.5).all(), cos
    # without the embedding the two captions are one input: the same prediction at any x_t (its samples can only
    # split between the two z_i by the noise, as an unconditional model would)
    plain = _prior(clip, cond_drop_prob=0.0).eval()
    x, t = torch.randn(1, 64).expand(2, -1), torch.tensor([500, 500])
    with torch.no_grad():
        out = plain.net(x, t, **kw)
    assert torch.equal(out[0], out[1])


def test_bad_token_input_is_refused(clip):
    prior = _prior(clip, token_embedding=True).eval()
    tokens, states, mask = _inputs(clip)
    kw = dict(text_embedding=F.normalize(torch.randn(2, 64), dim=-1), text_states=states, text_mask=mask)
    x, t = torch.randn(2, 64), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="pass text_tokens"):
        prior.net(x, t, **kw)
    with pytest.raises(ValueError, match=r"text_tokens must be a \(B, T\) integer tensor"):
        prior.net(x, t, text_tokens=tokens[:, :5], **kw)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
        prior.net(x, t, text_tokens=tokens + clip.config.vocab_size, **kw)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer, got 0"):
        DiffusionPriorConfig(vocab_size=0)


def test_image_embeddings_hand_the_prior_its_token_ids(clip):
    prior = _prior(clip, token_embedding=True).eval()
    with torch.no_grad():
        prior.net.token_proj.weight.normal_()
    a = image_embeddings("diffusion", clip=clip, captions=SIDES, prior=prior, steps=2, best_of=1,
                         generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 64) and torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        prior.net.token_proj.weight.zero_()
    b = image_embeddings("diffusion", clip=clip, captions=SIDES, prior=prior, steps=2, best_of=1,
                         generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)  # the embedding reached the network


def test_a_token_prior_trains_saves_and_reloads(tmp_path, clip, monkeypatch):
    save_clip(tmp_path / "clip", clip)
    recipe = prior_train.RECIPES["diffusion"]["tiny-tok"]
    assert recipe.model.token_embedding
    train = dataclasses.replace(recipe.train, steps=3, batch_size=8, checkpoint_every=3, warmup_steps=1)
    monkeypatch.setitem(prior_train.RECIPES["diffusion"], "micro-tok", prior_train.PriorRecipe(
        model=DiffusionPriorConfig(**SMALL, token_embedding=True), train=train, pairs=16))
    out = prior_train.train_prior(kind="diffusion", preset_name="micro-tok", clip_dir=tmp_path / "clip",
                                  run_dir=tmp_path / "run", progress=False)
    prior = load_prior(out)
    assert prior.config.token_embedding and prior.config.vocab_size == clip.config.vocab_size
    assert prior.net.token_proj.weight.abs().sum() > 0  # trained away from its zero start
    save_prior(tmp_path / "again", prior)
    back = load_prior(tmp_path / "again")
    assert all(torch.equal(a, b) for a, b in zip(prior.state_dict().values(), back.state_dict().values()))


def test_a_warm_restart_starts_from_the_saved_prior_on_later_scenes(tmp_path, clip, monkeypatch):
    """`init_from` (tiny-tok-ft's `--init-from`): at step 0 the run's weights are the saved prior's, it embeds the
    scenes from `pairs_from` on, and a prior of another config is refused by name."""
    save_clip(tmp_path / "clip", clip)
    start = _prior(clip, seed=5, token_embedding=True)
    save_prior(tmp_path / "start", start)
    train = dataclasses.replace(prior_train.RECIPES["diffusion"]["tiny-tok-ft"].train, steps=2, batch_size=8,
                                checkpoint_every=2, warmup_steps=1, ema_decay=None)
    monkeypatch.setitem(prior_train.RECIPES["diffusion"], "micro-ft", prior_train.PriorRecipe(
        model=DiffusionPriorConfig(**SMALL, token_embedding=True), train=train, pairs=8, pairs_from=16))
    out = prior_train.train_prior(kind="diffusion", preset_name="micro-ft", clip_dir=tmp_path / "clip",
                                  run_dir=tmp_path / "run", max_steps=0, init_from=tmp_path / "start",
                                  progress=False)
    a, b = start.state_dict(), load_prior(out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import load_file
    from unclip.data.sources import ShapesItems

    pairs = load_file(str(tmp_path / "run" / "embeddings.safetensors"))
    items = ShapesItems("train", size=clip.config.image_size)
    assert torch.equal(pairs["tokens"], clip.tokenizer([items[i]["caption"] for i in range(16, 24)]).int())
    with pytest.raises(ValueError, match=r"config differs .* \(in \['token_embedding'\]\)"):
        prior_train._load_initial_weights(_prior(clip), tmp_path / "start")
