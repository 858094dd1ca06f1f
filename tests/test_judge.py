"""The judge (unclip/judge): an image-text matching cross-encoder that re-ranks the pipeline's candidates."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from unclip import cli
from unclip.cli.args import DEFAULT_MODEL
from unclip.clip import load_clip, save_clip
from unclip.data import collate_image_caption
from unclip.data.images import to_tensor
from unclip.data.sources import ShapesItems
from unclip.decoder import save_decoder
from unclip.judge import Judge, JudgeConfig, load_judge, save_judge
from unclip.judge import train as judge_train
from unclip.pipeline import UnCLIP
from unclip.rerank import judge_scores

from test_pipeline import pipe  # noqa: F401  (the tiny random pipeline fixture)

SMALL = JudgeConfig(width=32, layers=1, heads=2)  # on the fixture's tiny CLIP (widths 128)


def _judge(seed=0, cfg=SMALL):
    torch.manual_seed(seed)
    return Judge(cfg).eval()


def test_each_pair_reads_its_own_image_and_caption_whatever_else_is_in_the_batch(pipe):
    """Pairs that share an image equal the same pairs given the image repeated, and each pair alone; a caption's
    logit does not depend on how long the batch's other captions are (the padding is cut and masked)."""
    judge, clip = _judge(), pipe.clip
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    captions = ["a red circle", "a green star to the left of a small pink cross", "two blue squares"]
    tokens = clip.tokenizer(captions)
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        shared = judge.score(clip, images=images, tokens=tokens, image_index=index)
        repeated = judge.score(clip, images=images[index], tokens=tokens)
        alone = torch.cat([judge.score(clip, images=images[i:i + 1], tokens=tokens[m:m + 1])
                           for m, i in enumerate(index)])
        assert shared.shape == (3,)
        assert torch.allclose(shared, repeated, atol=1e-5) and torch.allclose(shared, alone, atol=1e-5)
        one = clip.tokenizer(["a red circle"])  # the logit reads the caption and the image
        assert not torch.allclose(judge.score(clip, images=images[:1], tokens=one),
                                  judge.score(clip, images=images[:1], tokens=clip.tokenizer(["a blue circle"])))
        assert not torch.allclose(judge.score(clip, images=images[:1], tokens=one),
                                  judge.score(clip, images=images[1:], tokens=one))


def test_the_judge_leaves_its_clip_untouched(pipe):
    """Training the judge moves its own weights only: the CLIP it reads gets no gradient."""
    judge, clip = _judge().train(), pipe.clip
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    logits = judge.score(clip, images=torch.rand(2, 3, 32, 32) * 2 - 1, tokens=clip.tokenizer(["a", "two red stars"]))
    logits.sum().backward()
    assert all(p.grad is None for p in clip.parameters())
    assert all(p.grad is not None for p in judge.parameters())
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in before.items())


def test_bad_inputs_are_refused(pipe):
    judge, clip = _judge(), pipe.clip
    with pytest.raises(ValueError, match="CLIP expects 32x32 images, got \\(16, 16\\)"):
        judge.score(clip, images=torch.zeros(1, 3, 16, 16), tokens=clip.tokenizer(["a red circle"]))
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        judge.score(clip, images=torch.zeros(2, 3, 32, 32), tokens=clip.tokenizer(["a red circle"]))
    with pytest.raises(ValueError, match="the judge reads a CLIP of widths 64 \\(image\\) and 128"):
        Judge(SMALL.with_(vision_width=64)).score(clip, images=torch.zeros(1, 3, 32, 32),
                                                  tokens=clip.tokenizer(["a red circle"]))
    with pytest.raises(ValueError, match="width 30 is not divisible by 4 heads"):
        JudgeConfig(width=30)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        JudgeConfig(layers=0)
    with pytest.raises(ValueError, match="unknown JudgeConfig keys"):
        JudgeConfig.from_dict(SMALL.to_dict() | {"depth": 2})


def test_a_pixel_judge_gives_each_grid_state_the_pixels_of_its_own_patch(pipe, tmp_path):
    """JudgeConfig.patch: grid state r * g + c gets the pixels of patch (r, c) (row-major, as the CLIP's grid), the
    class state none; a patch that does not tile the CLIP's grid is refused by name; it saves and loads."""
    clip = pipe.clip
    judge = _judge(cfg=SMALL.with_(patch=4))
    seen = []
    judge.pixel_in.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    images = -torch.ones(1, 3, 32, 32)
    images[0, 1, 8:12, 20:24] = 1.0  # green in patch row 2, column 5 of the 8 x 8 grid
    with torch.no_grad():
        first = judge.score(clip, images=images, tokens=clip.tokenizer(["a green square"]))
    patches = seen[-1][0]  # (64, 48)
    assert patches.shape == (64, 3 * 16) and (patches > -1).any(dim=1).nonzero().flatten().tolist() == [2 * 8 + 5]
    assert torch.equal(patches[2 * 8 + 5].view(3, 4, 4), images[0, :, 8:12, 20:24])  # channel, row, column
    save_judge(tmp_path / "p", judge)
    again = load_judge(tmp_path / "p")
    with torch.no_grad():
        assert torch.equal(again.score(clip, images=images, tokens=clip.tokenizer(["a green square"])), first)
    with pytest.raises(ValueError, match="8 px patches make 16 of \\(32, 32\\) images, the CLIP's grid has 64"):
        _judge(cfg=SMALL.with_(patch=8)).score(clip, images=images, tokens=clip.tokenizer(["a green square"]))
    with pytest.raises(ValueError, match="patch must be a non-negative integer, got -1"):
        SMALL.with_(patch=-1)


def test_save_and_load_round_trip(pipe, tmp_path):
    judge, clip = _judge(seed=3), pipe.clip
    save_judge(tmp_path / "j", judge)
    again = load_judge(tmp_path / "j")
    assert again.config == judge.config
    images, tokens = torch.rand(2, 3, 32, 32) * 2 - 1, clip.tokenizer(["a red circle", "three small yellow stars"])
    with torch.no_grad():
        assert torch.equal(judge.score(clip, images=images, tokens=tokens),
                           again.score(clip, images=images, tokens=tokens))
    with pytest.raises(FileNotFoundError, match="not a judge directory"):
        load_judge(tmp_path)


def test_corruption_blurs_and_noises_only_the_chosen_share():
    images = torch.rand(64, 3, 32, 32) * 2 - 1
    same = judge_train.corrupt(images, share=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, images)
    changed = judge_train.corrupt(images, share=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(changed, images) and changed.min() >= -1 and changed.max() <= 1
    # a blur lowers the pixel-to-pixel variation of uniform noise a lot; the added noise is at most 0.1
    assert (changed.diff(dim=-1).abs().mean() < 0.8 * images.diff(dim=-1).abs().mean())
    again = judge_train.corrupt(images, share=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(changed, again)
    flat = torch.full((4, 3, 32, 32), 0.25)  # a flat image stays flat under the blur: only the noise moves it
    assert (judge_train.corrupt(flat, share=1.0, generator=torch.Generator().manual_seed(1)) - 0.25).abs().mean() < 0.1


def test_the_loss_falls_as_the_judge_learns_a_batch():
    """Fifty Adam steps on one batch of scenes with their hard negatives lower the matching loss, reading the shipped
    CLIP (on a random CLIP's features the loss sits at log 2 for longer than a test should wait)."""
    recipe = replace(judge_train.RECIPES["tiny"], model=SMALL, corrupt=0.0)
    data = ShapesItems("train", size=32, negatives=recipe.negatives, negative_weights=recipe.negative_weights)
    batch = collate_image_caption([data[i] for i in range(8)])
    loss_fn = judge_train.judge_loss(load_clip(DEFAULT_MODEL / "clip"), recipe)
    judge = _judge().train()
    first = loss_fn(judge, batch, torch.Generator().manual_seed(0))
    assert set(first) == {"loss", "hard_pairs", "accuracy"}
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    for _ in range(50):  # from 0.76 to about 0.18
        opt.zero_grad()
        loss_fn(judge, batch, torch.Generator().manual_seed(0))["loss"].backward()
        opt.step()
    last = loss_fn(judge, batch, torch.Generator().manual_seed(0))
    assert float(last["loss"].detach()) < 0.5 * float(first["loss"].detach())
    with pytest.raises(ValueError, match="hard negatives for 8 scenes"):
        loss_fn(judge, batch | {"negatives": batch["negatives"][:-1]}, torch.Generator())


def test_with_negative_images_the_judge_learns_to_rank_a_scene_above_its_changed_copy():
    """The tiny-images recipe scores each scene's changed copy (world/counterfactual.py) against the true caption as
    a negative: fifty Adam steps on one batch put every true image above its copy for its caption."""
    recipe = replace(judge_train.RECIPES["tiny-images"], model=SMALL, corrupt=0.0)
    data = ShapesItems("train", size=32, negatives=recipe.negatives, negative_weights=recipe.negative_weights,
                       change_weights=recipe.change_weights)
    batch = collate_image_caption([data[i] for i in range(8)])
    clip = load_clip(DEFAULT_MODEL / "clip")
    loss_fn = judge_train.judge_loss(clip, recipe)
    judge = _judge().train()
    first = loss_fn(judge, batch, torch.Generator().manual_seed(0))
    plain = judge_train.judge_loss(clip, replace(recipe, change_weights=None))(
        judge, {k: v for k, v in batch.items() if k != "negative_image"}, torch.Generator().manual_seed(0))
    assert set(first) == {"loss", "hard_pairs", "accuracy", "image_pairs"} and "image_pairs" not in plain
    first_loss, plain_loss = float(first["loss"].detach()), float(plain["loss"].detach())
    assert first_loss != pytest.approx(plain_loss, rel=1e-4)  # the 8 extra pairs count
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    for _ in range(50):
        opt.zero_grad()
        loss_fn(judge, batch, torch.Generator().manual_seed(0))["loss"].backward()
        opt.step()
    last = loss_fn(judge, batch, torch.Generator().manual_seed(0))
    assert float(last["loss"].detach()) < 0.5 * float(first["loss"].detach())
    assert float(last["image_pairs"]) == 1.0


def test_the_pipeline_keeps_the_candidate_its_judge_scores_highest(pipe, tmp_path, monkeypatch):
    """Trained two steps through the CLI, assembled into a pipeline, the judge picks among the candidates: the kept
    image is the one of K with the highest logit, which is not always the one the CLIP would keep."""
    monkeypatch.setitem(judge_train.RECIPES, "tiny", replace(judge_train.RECIPES["tiny"], model=SMALL, train=replace(
        judge_train.RECIPES["tiny"].train, steps=2, batch_size=4, warmup_steps=1, checkpoint_every=1)))
    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d", pipe.decoder)
    assert cli.main(["train", "judge", "--clip", str(tmp_path / "c"), "--run-dir", str(tmp_path / "run")]) == 0
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d"), "--judge",
                     str(tmp_path / "run" / "model"), "--out", str(tmp_path / "asm")]) == 0
    assembled = UnCLIP.from_pretrained(tmp_path / "asm")
    assert assembled.config.judge and assembled.judge is not None
    judge = _judge(seed=7)  # a random judge disagrees with the CLIP more often than a two-step one
    assembled = UnCLIP(clip=assembled.clip, decoder=assembled.decoder, prior=pipe.prior, judge=judge,
                       config=pipe.config.with_(judge=True))
    captions, k = ["a red circle", "two blue squares", "a green star above a pink triangle", "a gray diamond",
                   "a small yellow cross to the right of a black circle", "three red stars"], 3
    drawn = assembled(captions, num_images=k, seed=5, upsample=False)  # caption-major: k candidates per caption
    assembled.config = assembled.config.with_(candidates=k)
    kept = assembled(captions, seed=5, upsample=False)
    tokens = assembled.tokens([c for c in captions for _ in range(k)])
    scores = judge_scores(judge, assembled.clip, torch.stack([to_tensor(im, 16) for im in drawn]),
                          tokens).view(len(captions), k)
    chosen = [next(j for j in range(k) if drawn[i * k + j].tobytes() == kept[i].tobytes())
              for i in range(len(captions))]
    assert chosen == scores.argmax(dim=1).tolist()
    by_clip = assembled.config.with_(judge=False)
    assembled.config = by_clip
    assert [im.tobytes() for im in assembled(captions, seed=5, upsample=False)] != [im.tobytes() for im in kept]

    with pytest.raises(ValueError, match="no judge stage"):
        UnCLIP(clip=pipe.clip, decoder=pipe.decoder, config=pipe.config.with_(judge=True))
    with pytest.raises(ValueError, match="the judge reads a CLIP of widths 128 \\(image\\) and 64"):
        UnCLIP(clip=pipe.clip, decoder=pipe.decoder, judge=Judge(SMALL.with_(text_width=64)))
    parser = cli.build_parser()
    model = ["--out", "x", "--model", str(tmp_path / "asm")]
    assert not cli._pipeline(parser.parse_args(["generate", "a red circle", *model, "--no-judge"])).config.judge
    UnCLIP(clip=pipe.clip, decoder=pipe.decoder).save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match="no judge stage"):
        cli._pipeline(parser.parse_args(["generate", "a red circle", "--out", "x", "--model", str(tmp_path / "plain"),
                                         "--judge"]))
    with pytest.raises(SystemExit, match="--clip DIR"):
        cli.main(["train", "judge", "--run-dir", str(tmp_path / "run2")])


def test_a_pipeline_preset_that_reranks_by_the_judge_names_its_recipe():
    from unclip.train_all import PRESETS
    preset = PRESETS["shapes-2h"]
    with pytest.raises(ValueError, match="need a judge recipe"):
        replace(preset, sampling=preset.sampling.with_(judge=True))
    assert replace(preset, judge="tiny", sampling=preset.sampling.with_(judge=True)).judge == "tiny"
    assert np.all([p.judge in (None, *judge_train.RECIPES) for p in PRESETS.values()])
