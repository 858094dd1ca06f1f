"""The unCLIP pipeline, the manipulations and the verbs that write images (issue 8), on tiny random stages."""

import json
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unclip import cli
from unclip.clip import CLIP, preset
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.decoder import Decoder, DecoderConfig, UNetConfig, Upsampler, UpsamplerConfig
from unclip.diffusion import DiffusionConfig
from unclip.manipulate import VARIATION_ETA, interpolate, slerp, text_diff, variations
from unclip.pipeline import PipelineConfig, StageSampling, UnCLIP
from unclip.prior import ARPrior, ARPriorConfig, DiffusionPrior, DiffusionPriorConfig
from unclip.tokenizer import Tokenizer
from unclip.world import read_manifest, render, sample_scene

from perturb import perturb

FAST = PipelineConfig(prior=StageSampling(steps=3), decoder=StageSampling(steps=4, guidance_scale=2.0),
                      upsampler=StageSampling(steps=2))
V = DiffusionConfig(prediction="v", zero_terminal_snr=True)
STORED_SLICE = [[214, 151, 99], [255, 199, 118], [214, 0, 0]]  # test_stored_output_slice: pixels (12..14, 16)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    clip = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1))
    clip.tokenizer = tokenizer
    small = dict(width=32, layers=1, heads=2)
    prior = DiffusionPrior(DiffusionPriorConfig(**small))
    z = F.normalize(torch.randn(200, 64), dim=-1)
    ar = ARPrior.from_embeddings(ARPriorConfig(**small, buckets=32, similarity_buckets=4, max_components=4),
                                 image_embedding=z, text_embedding=z.roll(1, 0))
    decoder = perturb(Decoder(DecoderConfig(unet=UNetConfig(
        image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
        head_channels=16), diffusion=V)))
    up = perturb(Upsampler(UpsamplerConfig(unet=UNetConfig(
        image_size=32, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
        clip_dim=None, text_width=None, low_res_channels=3), diffusion=V, low_res_size=16, crop_size=16)))
    return UnCLIP(clip=clip, decoder=decoder, prior=prior, ar_prior=ar, upsamplers=[up], config=FAST)


def _shape_image(index=0, size=16):
    return render(sample_scene("test", index), size)


def test_generate_is_seeded_batched_and_returns_every_stage(pipe):
    a = pipe(["a red circle", "two blue squares"], num_images=2, seed=3, stages=True)
    assert list(a) == ["decoder", "upsampler1"]
    assert [im.size for im in a["decoder"]] == [(16, 16)] * 4 and a["upsampler1"][0].size == (32, 32)
    b = pipe(["a red circle", "two blue squares"], num_images=2, seed=3)
    assert [im.tobytes() for im in b] == [im.tobytes() for im in a["upsampler1"]]
    c = pipe(["a red circle", "two blue squares"], num_images=2, seed=4)
    assert [im.tobytes() for im in c] != [im.tobytes() for im in b]


@pytest.mark.parametrize("kind", ["diffusion", "ar"])
def test_a_batch_equals_its_captions_drawn_one_by_one(pipe, kind):
    captions = ["a red circle", "two blue squares", "a green star to the left of a pink cross"]
    base, pipe.config = pipe.config, pipe.config.with_(candidates=2)  # re-ranked, as the shipped pipeline is
    try:
        together = pipe(captions, num_images=2, seed=5, prior=kind, stages=True)
        for i, caption in enumerate(captions):  # caption i draws from seed 5 + i, whatever else is in its batch
            alone = pipe([caption], num_images=2, seed=5 + i, prior=kind, stages=True)
            for stage, images in alone.items():
                for j, image in enumerate(images):
                    drawn = np.asarray(together[stage][2 * i + j], dtype=int)
                    assert np.abs(drawn - np.asarray(image, dtype=int)).max() <= 1, (stage, i, j)  # batched rounding
        seeds = pipe(captions, seed=[5, 6, 7], prior=kind, upsample=False)
        assert [im.tobytes() for im in seeds] == [im.tobytes() for im in pipe(captions, seed=5, prior=kind,
                                                                                upsample=False)]
    finally:
        pipe.config = base


def test_seeds_per_caption_must_match_the_captions(pipe):
    with pytest.raises(ValueError, match="2 seeds for 3 captions"):
        pipe(["a red circle", "a blue square", "a green star"], seed=[1, 2])


def test_stored_output_slice(pipe):
    # A known answer for the whole tiny pipeline (prior, decoder, re-ranking off, upsampler) at seed 0, recorded
    # 2026-12-07 with per-caption generators on torch 2.13 CPU; a change of any stage's sampling or seeding moves it.
    image = np.asarray(pipe(["a red circle on a black background"], seed=0)[0], dtype=int)  # (32, 32, 3)
    assert image[12:15, 16, :].tolist() == STORED_SLICE


@pytest.mark.parametrize("kind", ["diffusion", "ar", "text-embedding", "none"])
def test_every_prior_kind_draws(pipe, kind):
    z = pipe.image_embeddings(["a green star"], prior=kind, generator=torch.Generator().manual_seed(0))
    if kind == "none":
        assert z is None
    else:
        assert z.shape == (1, 64) and torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5)
    images = pipe(["a green star"], prior=kind, upsample=False)
    assert len(images) == 1 and images[0].size == (16, 16)


def test_bad_captions_and_directories_are_refused(pipe, tmp_path):
    with pytest.raises(ValueError, match="caption 1 is empty"):
        pipe(["a red circle", "  "])
    with pytest.raises(ValueError, match="past the context of 24"):
        pipe(["a red circle " * 20])
    with pytest.raises(FileNotFoundError, match="no pipeline.json"):
        UnCLIP.from_pretrained(tmp_path)
    pipe.save_pretrained(tmp_path / "p")
    record = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    (tmp_path / "p" / "pipeline.json").write_text(json.dumps(record | {"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        UnCLIP.from_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="unknown prior kind 'clip'"):
        PipelineConfig(prior_kind="clip")


def test_save_and_load_in_half_precision(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p", half=True)
    back = UnCLIP.from_pretrained(tmp_path / "p")
    assert back.config == pipe.config and back.sizes == pipe.sizes == [16, 32]
    for name in ("clip", "decoder", "prior", "ar_prior", "upsampler1"):
        assert (tmp_path / "p" / name / "model.safetensors").is_file()
    # safetensors creates files 0600 whatever the umask: a pipeline saved to share gets the mode its JSON gets
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "p" / "decoder").iterdir()}
    assert modes["model.safetensors"] == modes["decoder_config.json"], modes
    for mine, theirs in ((pipe.decoder, back.decoder), (pipe.prior, back.prior), (pipe.clip, back.clip)):
        for (k, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert b.dtype == a.dtype, k  # loaded back into float32 modules
            if a.is_floating_point():
                assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), k
    assert torch.equal(back.ar_prior.quantizer.low, pipe.ar_prior.quantizer.low.half().float())


def test_slerp():
    a, b = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose((mid * a).sum(-1), (mid * b).sum(-1), atol=1e-5)  # halfway in angle
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-6)  # parallel: no division by zero


def test_manipulations_agree_with_each_other(pipe):
    image, other = _shape_image(0), _shape_image(1)
    same = variations(pipe, image, n=3, eta=0.0)
    assert same.shape == (3, 3, 16, 16) and torch.allclose(same[0], same[1]) and torch.allclose(same[0], same[2])
    wander = variations(pipe, image, n=3, eta=1.0, seed=1)
    assert not torch.allclose(wander[0], wander[1])
    strip = interpolate(pipe, image, other, steps=4)
    assert strip.shape == (4, 3, 16, 16)
    assert torch.allclose(strip[0], same[0], atol=1e-5)  # theta 0: image a's own latent, decoded deterministically
    assert torch.allclose(strip[-1], variations(pipe, other, n=1, eta=0.0)[0], atol=1e-5)
    edit = text_diff(pipe, image, old="a red circle", new="a blue circle", steps=3)
    assert torch.allclose(edit[0], same[0], atol=1e-5) and not torch.allclose(edit[0], edit[-1])
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        text_diff(pipe, image, old="a red circle", new="a red circle")
    # the decode's guidance is the caller's (the inversion stays unguided): guidance 1 is the default, 3 differs
    assert torch.allclose(variations(pipe, image, n=1, eta=0.0, guidance_scale=1.0), same[:1], atol=1e-5)
    assert not torch.allclose(variations(pipe, image, n=1, eta=0.0, guidance_scale=3.0), same[:1], atol=1e-3)


def test_manipulations_run_ddim_at_their_own_steps(pipe):
    """Whatever the pipeline generates with, the manipulations retrace the DDIM path their inversion ran backwards,
    at PipelineConfig.manipulation_steps when it is set."""
    from dataclasses import replace
    image = _shape_image(0)
    base = variations(pipe, image, n=1, eta=0.0)  # FAST: DDIM, 4 steps
    saved = pipe.config
    try:
        pipe.config = saved.with_(decoder=replace(saved.decoder, sampler="dpm++"))
        assert torch.allclose(variations(pipe, image, n=1, eta=0.0), base, atol=1e-5)
        pipe.config = saved.with_(decoder=replace(saved.decoder, steps=2), manipulation_steps=saved.decoder.steps)
        assert torch.allclose(variations(pipe, image, n=1, eta=0.0), base, atol=1e-5)
        pipe.config = saved.with_(manipulation_steps=2)
        fewer = variations(pipe, image, n=1, eta=0.0)
        assert not torch.allclose(fewer, base, atol=1e-3)
        pipe.config = saved
        assert torch.allclose(fewer, variations(pipe, image, n=1, eta=0.0, steps=2), atol=1e-6)
    finally:
        pipe.config = saved
    with pytest.raises(ValueError, match="manipulation_steps must be None or a positive integer, got 0"):
        saved.with_(manipulation_steps=0)


def test_cli_verbs_write_pngs_and_manifests(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    assert cli.main(["world", "sample", "--split", "test", "--n", "3", "--size", "16", "--out", str(tmp_path / "w"),
                     "--quiet"]) == 0
    m = ["--model", str(tmp_path / "model"), "--quiet"]
    assert cli.main(["generate", "--prompts-file", str(tmp_path / "w" / "prompts.jsonl"), "--out",
                     str(tmp_path / "g"), "--n-per-prompt", "2", "--batch-size", "2", *m]) == 0
    assert cli.main(["generate", "a red circle", "--out", str(tmp_path / "g16"), "--no-upsample", *m]) == 0
    assert Image.open(tmp_path / "g16" / "000000.png").size == (16, 16)
    entries, errors = read_manifest(tmp_path / "g")
    assert not errors and len(entries) == 6 and entries[0].extra["split"] == "test"
    assert [e.extra["index"] for e in entries] == [0, 0, 1, 1, 2, 2]
    assert Image.open(tmp_path / "g" / entries[-1].file).size == (32, 32)
    image = str(tmp_path / "w" / "000000.png")
    assert cli.main(["vary", image, "--n", "2", "--out", str(tmp_path / "v"), *m]) == 0
    entries, _ = read_manifest(tmp_path / "v")
    assert len(entries) == 2 and entries[0].extra["source"] == image and (tmp_path / "v" / "grid.png").is_file()
    assert entries[0].extra["eta"] == VARIATION_ETA  # the measured default, recorded per image
    assert cli.main(["interpolate", image, str(tmp_path / "w" / "000001.png"), "--steps", "3", "--out",
                     str(tmp_path / "i"), *m]) == 0
    assert len(read_manifest(tmp_path / "i")[0]) == 3
    assert cli.main(["textdiff", image, "--from", "a red circle", "--to", "a blue circle", "--steps", "3", "--out",
                     str(tmp_path / "t"), *m]) == 0
    assert len(read_manifest(tmp_path / "t")[0]) == 3
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        cli.main(["vary", str(tmp_path / "bad.png"), "--out", str(tmp_path / "x"), *m])
    with pytest.raises(SystemExit, match="no pipeline.json"):
        cli.main(["generate", "a red circle", "--out", str(tmp_path / "x"), "--model", str(tmp_path)])


def test_assemble_writes_a_loadable_pipeline(pipe, tmp_path):
    from unclip.clip import save_clip
    from unclip.decoder import save_decoder
    from unclip.prior import save_prior

    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d", pipe.decoder)
    save_decoder(tmp_path / "u", pipe.upsamplers[0])
    save_prior(tmp_path / "p", pipe.prior)
    save_prior(tmp_path / "a", pipe.ar_prior)
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d"), "--prior",
                     str(tmp_path / "p"), "--ar-prior", str(tmp_path / "a"), "--upsampler", str(tmp_path / "u"),
                     "--out", str(tmp_path / "pipe")]) == 0
    back = UnCLIP.from_pretrained(tmp_path / "pipe")
    assert back.sizes == [16, 32] and back.ar_prior is not None and back.config.prior_kind == "diffusion"


def test_assemble_averages_several_decoders_weight_for_weight(pipe, tmp_path):
    from unclip.clip import save_clip
    from unclip.decoder import average_decoders, load_decoder, save_decoder

    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d1", pipe.decoder)
    other = load_decoder(tmp_path / "d1")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    save_decoder(tmp_path / "d2", other)
    mean = average_decoders([tmp_path / "d1", tmp_path / "d2"])
    for (name, a), b, m in zip(pipe.decoder.state_dict().items(), other.state_dict().values(),
                               mean.state_dict().values()):
        assert torch.allclose(m, (a + b) / 2, atol=1e-6), name
    one = average_decoders([tmp_path / "d1"])
    assert all(torch.equal(a, b) for a, b in zip(pipe.decoder.state_dict().values(), one.state_dict().values()))
    save_decoder(tmp_path / "u", pipe.upsamplers[0])
    with pytest.raises(ValueError, match="describe different networks"):
        average_decoders([tmp_path / "d1", tmp_path / "u"])
    # trained with other training-only settings (conditioning dropout, pixel weights): the same network, so it averages
    dropped = Decoder(pipe.decoder.config.with_(p_drop_text=0.3, foreground_weight=2.0))
    dropped.load_state_dict(other.state_dict())
    save_decoder(tmp_path / "d3", dropped)
    again = average_decoders([tmp_path / "d1", tmp_path / "d3"])
    assert all(torch.equal(a, b) for a, b in zip(mean.state_dict().values(), again.state_dict().values()))
    assert again.config == pipe.decoder.config  # the first's
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d1"),
                     str(tmp_path / "d2"), "--out", str(tmp_path / "pipe"), "--full-precision"]) == 0
    back = UnCLIP.from_pretrained(tmp_path / "pipe").decoder
    assert all(torch.equal(a, b) for a, b in zip(mean.state_dict().values(), back.state_dict().values()))


def test_demo_page_shows_every_section(pipe, tmp_path):
    from unclip.demo import make_demo

    index = make_demo(pipe, tmp_path, log=lambda _: None)
    page = index.read_text()
    for section in ("generate", "variations", "interpolation", "textdiff"):
        assert f'src="{section}/grid.png"' in page and (tmp_path / section / "grid.png").is_file()
    assert len(read_manifest(tmp_path / "generate")[0]) == 8 and len(read_manifest(tmp_path / "interpolation")[0]) == 7
    assert "a blue circle" in page


def test_eval_reports_what_the_world_scorer_says(pipe, tmp_path):
    from unclip.eval.harness import evaluate

    encoder = CLIP(preset("tiny").with_(vocab_size=pipe.clip.config.vocab_size, vision_layers=1, text_layers=1,
                                        image_size=16))
    encoder.tokenizer = pipe.clip.tokenizer
    metrics = evaluate(pipe, tmp_path, n=6, n_novel=2, eval_encoder=encoder.eval(), diversity_captions=2,
                       diversity_k=2)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["overall"] == metrics["overall"]
    assert cli.main(["world", "score", str(tmp_path / "test"), "--quiet"]) == 0  # the same images, scored again
    from unclip.world import score_entries, summarise
    again = summarise(list(score_entries(tmp_path / "test", read_manifest(tmp_path / "test")[0])))
    assert again["overall"] == metrics["overall"] and len(read_manifest(tmp_path / "novel")[0]) == 2
    e = metrics["eval_encoder"]
    assert e["fd"] >= 0 and 0 <= e["precision"] <= 1 and e["diversity"] >= 0
    assert set(metrics["prior_metrics"]) >= {"cos_true", "cos_text_gap", "cos_unrelated_text"}
    assert "| **overall** |" in (tmp_path / "report.md").read_text()
    assert metrics["decoder_guidance"] == "classifier-free 2" and "decoder guidance classifier-free 2," in (
        tmp_path / "report.md").read_text()
    assert "samples.png" in metrics["plots"] and (tmp_path / "samples.png").is_file()
    try:
        import matplotlib  # noqa: F401  (the optional `plots` extra)
    except ImportError:
        assert "accuracy_by_skill.png" not in metrics["plots"]
    else:
        assert "accuracy_by_skill.png" in metrics["plots"] and (tmp_path / "accuracy_by_skill.png").is_file()


def test_eval_on_emoji_measures_against_the_held_out_emoji(pipe, tmp_path):
    """Another source has no scorer: its samples are measured against its own first images, with a floor."""
    from unclip.data.emoji import EmojiDataset
    from unclip.eval.harness import evaluate

    encoder = CLIP(preset("tiny").with_(vocab_size=pipe.clip.config.vocab_size, vision_layers=1, text_layers=1,
                                        image_size=16))
    encoder.tokenizer = pipe.clip.tokenizer
    metrics = evaluate(pipe, tmp_path, n=5, eval_encoder=encoder.eval(), data="emoji", diversity_captions=2,
                       diversity_k=2)
    held_out = EmojiDataset("test", size=16)
    entries, errors = read_manifest(tmp_path / "test")
    assert not errors and metrics["overall"] is None and metrics["data"] == "emoji:test"
    order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0)).tolist()
    fitting = [held_out.items[i][0] for i in order if _fits(pipe, held_out.items[i][0])]
    assert [e.caption for e in entries] == fitting[:5]
    e = metrics["eval_encoder"]
    assert e["fd"] >= 0 and e["fd_real_vs_real"] >= 0 and 0 <= e["recall"] <= 1 and e["diversity"] >= 0
    assert set(metrics["prior_metrics"]) >= {"cos_true", "cos_text_gap"}
    assert "no scorer" in (tmp_path / "report.md").read_text() and (tmp_path / "samples.png").is_file()
    with pytest.raises(ValueError, match="pass --eval-encoder"):
        evaluate(pipe, tmp_path / "x", n=5, data="emoji")
    with pytest.raises(ValueError, match="unknown data source"):
        evaluate(pipe, tmp_path / "y", n=5, data="pictures", eval_encoder=encoder)


def test_eval_on_the_val_split_scores_val_captions_and_refuses_another(pipe, tmp_path):
    """`unclip eval --split val` (for choosing models) generates for the val split's captions into OUT/val, scores
    them there and says so; any other split is refused by name."""
    from unclip.eval.harness import evaluate
    from unclip.world import sample_scene, score_entries, summarise
    metrics = evaluate(pipe, tmp_path, n=4, n_novel=0, split="val")
    entries, _ = read_manifest(tmp_path / "val")
    assert [e.caption for e in entries] == [sample_scene("val", i).caption for i in range(4)]
    assert [e.caption for e in entries] != [sample_scene("test", i).caption for i in range(4)]
    assert not (tmp_path / "test").exists() and metrics["split"] == "val"
    assert summarise(list(score_entries(tmp_path / "val", entries)))["overall"] == metrics["overall"]
    assert "4 val and 0 novel captions" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="split must be 'test' or 'val', got 'train'"):
        evaluate(pipe, tmp_path / "x", n=4, split="train")


def _fits(pipe, caption):
    try:
        pipe.tokens([caption])
        return True
    except ValueError:
        return False


def test_a_text_only_decoder_takes_no_prior(pipe, tmp_path):
    """The GLIDE-style baseline (issue 9): a decoder without z_i draws from the caption; every prior kind but none
    is refused by name, and assemble makes `none` its default."""
    from unclip.clip import save_clip
    from unclip.decoder import save_decoder

    glide = perturb(Decoder(pipe.decoder.config.with_(unet=pipe.decoder.config.unet.with_(clip_dim=None))))
    text_only = UnCLIP(clip=pipe.clip, decoder=glide, config=FAST.with_(prior_kind="none"))
    a = text_only(["a red circle", "two blue squares"], seed=1, upsample=False)
    assert [im.size for im in a] == [(16, 16)] * 2
    with pytest.raises(ValueError, match="'text-embedding'"):
        text_only(["a red circle"], prior="text-embedding")
    with pytest.raises(ValueError, match="takes no prior"):
        UnCLIP(clip=pipe.clip, decoder=glide, prior=pipe.prior)
    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d", glide)
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d"),
                     "--out", str(tmp_path / "pipe")]) == 0
    assert UnCLIP.from_pretrained(tmp_path / "pipe").config.prior_kind == "none"


def test_sampling_flags_override_the_saved_config(pipe, tmp_path):
    from unclip.pipeline import SAMPLERS
    assert cli.SAMPLER_CHOICES == SAMPLERS
    pipe.save_pretrained(tmp_path / "model")
    parser = cli.build_parser()
    args = parser.parse_args(["generate", "a red circle", "--out", str(tmp_path / "g"), "--model",
                              str(tmp_path / "model"), "--prior-sampler", "dpm++", "--prior-steps", "5",
                              "--best-of", "1", "--decoder-sampler", "dpm++", "--decoder-steps", "7",
                              "--candidates", "3"])
    cfg = cli._pipeline(args).config
    assert (cfg.prior.sampler, cfg.prior.steps, cfg.best_of, cfg.candidates) == ("dpm++", 5, 1, 3)
    assert (cfg.decoder.sampler, cfg.decoder.steps, cfg.decoder.guidance_scale) == ("dpm++", 7, 2.0)
    assert cfg.upsampler == FAST.upsampler
    for bad in (["--decoder-sampler", "euler"], ["--best-of", "0"], ["--decoder-steps", "-3"], ["--prior-steps", "x"],
                ["--candidates", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["generate", "a red circle", "--out", "x", *bad])
    with pytest.raises(ValueError, match="best_of must be a positive integer, got 0"):
        FAST.with_(best_of=0)
    with pytest.raises(ValueError, match="candidates must be a positive integer, got 2.0"):
        FAST.with_(candidates=2.0)
    args = parser.parse_args(["generate", "a red circle", "--out", "x", "--model", str(tmp_path / "model"),
                              "--guidance-interval", "0.2", "0.8"])
    cfg = cli._pipeline(args).config
    assert cfg.decoder.guidance_interval == (0.2, 0.8)
    assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON's list reads back as a tuple
    for bad in ((0.8, 0.2), (-0.1, 0.5), (0.1, 1.5), (0.5,), ("a", "b"), 0.5):
        with pytest.raises(ValueError, match="guidance_interval must be"):
            StageSampling(guidance_interval=bad)
    with pytest.raises(ValueError, match="decoder only, got prior.guidance_interval"):
        FAST.with_(prior=StageSampling(sampler="dpm++", steps=2, guidance_interval=(0.0, 1.0)))


def test_a_guidance_interval_spanning_every_step_or_none_equals_full_or_no_guidance(pipe):
    """Known answers: an interval holding all the decoder's steps is plain guidance, one holding none of them is the
    conditional model alone (guidance 1); one in between differs from both."""
    from dataclasses import replace
    base = pipe.config
    cfg = base.with_(candidates=1, decoder=replace(base.decoder, steps=4))  # trailing over T = 1000: 999 .. 249

    def images(**decoder):
        pipe.config = cfg.with_(decoder=replace(cfg.decoder, **decoder))
        return np.stack([np.asarray(im) for im in pipe(["a red circle", "two blue squares"], seed=3, upsample=False)])

    try:
        guided, unguided = images(), images(guidance_scale=1.0)
        assert np.array_equal(images(guidance_interval=(0.0, 1.0)), guided)
        assert np.array_equal(images(guidance_interval=(0.0, 0.2)), unguided)  # t = 0 .. 199: no step inside
        partly = images(guidance_interval=(0.5, 1.0))
        assert not np.array_equal(partly, guided) and not np.array_equal(partly, unguided)
        with pytest.raises(ValueError, match=r"\(0.5, 0.5\) holds none of the decoder's timesteps 0..999"):
            images(guidance_interval=(0.5, 0.5))
    finally:
        pipe.config = base


def test_candidates_keep_the_image_clip_rates_closest_to_the_caption(pipe):
    """Best of K: each image is the one of the K that num_images=K draws whose CLIP embedding is nearest z_t."""
    from dataclasses import replace

    from unclip.data.images import to_tensor
    from unclip.eval.harness import nfe_per_image
    from unclip.rerank import clip_scores
    captions, k = ["a red circle", "two blue squares", "a green star above a pink triangle", "a gray diamond"], 3
    drawn = pipe(captions, num_images=k, seed=5, upsample=False)  # caption-major: k candidates per caption
    assert nfe_per_image(pipe, "diffusion") == 3 + 2 * 4 + 2  # prior 3 steps, guided decoder 4, upsampler 2
    base, pipe.config = pipe.config, pipe.config.with_(candidates=k)
    try:
        kept = pipe(captions, seed=5, upsample=False)
        assert nfe_per_image(pipe, "diffusion") == k * (3 + 2 * 4) + 2  # the upsampler runs once, on the kept image
        assert nfe_per_image(pipe, "diffusion", upsample=False) == k * (3 + 2 * 4)
        # the pipeline's decoder steps (trailing over T = 1000: t = 999, 749, 499, 249) guided only inside the interval
        pipe.config = pipe.config.with_(decoder=replace(pipe.config.decoder, guidance_interval=(0.4, 0.9)))
        assert nfe_per_image(pipe, "diffusion", upsample=False) == k * (3 + 4 + 2)
    finally:
        pipe.config = base
    z_t = pipe.text_conditioning([c for c in captions for _ in range(k)])[0]
    scores = clip_scores(pipe.clip, torch.stack([to_tensor(im, 16) for im in drawn]), z_t).view(len(captions), k)
    chosen = [next(j for j in range(k) if drawn[i * k + j].tobytes() == kept[i].tobytes())
              for i in range(len(captions))]
    assert chosen == scores.argmax(dim=1).tolist()
    assert any(chosen), "every kept image was the first candidate: the test cannot tell re-ranking from none"


def test_candidates_share_fewer_prior_draws_when_asked(pipe, monkeypatch):
    """prior_draws = D < K: each image's K candidates decode D z_i, each K / D times with its own decoder noise; the
    prior's evaluations count D times, the decoder's K times; a D that does not divide K is refused by name."""
    from unclip.eval.harness import nfe_per_image
    captions = ["a red circle", "two blue squares"]
    base = pipe.config
    drawn = []
    real = pipe.image_embeddings

    def recording(batch, **kw):
        z = real(batch, **kw)
        drawn.append(z)
        return z

    monkeypatch.setattr(pipe, "image_embeddings", recording)
    try:
        pipe.config = base.with_(candidates=4, prior_draws=2)
        images = pipe.candidates(captions, seed=3)  # (2 * 4, 3, 16, 16)
        assert drawn[-1].shape[0] == 2 * 2  # two z_i per caption
        assert not torch.equal(drawn[-1][0], drawn[-1][1])
        assert all(not torch.equal(images[i], images[i + 1]) for i in (0, 2, 4, 6))  # one z_i, two decoder draws
        assert nfe_per_image(pipe, "diffusion", upsample=False) == 2 * 3 + 4 * 2 * 4
        again = pipe.candidates(captions[1:], seed=4)  # caption 1 alone, seeded as in the batch
        assert torch.allclose(again, images[4:], atol=1e-5)
        pipe.config = base.with_(candidates=4)
        assert pipe.candidates(captions, seed=3).shape == images.shape and drawn[-1].shape[0] == 2 * 4
        for bad in (3, 0, True):
            with pytest.raises(ValueError, match=f"prior_draws must be .* got {bad!r}"):
                base.with_(candidates=4, prior_draws=bad)
    finally:
        pipe.config = base


def test_pick_best_and_clip_scores_known_answers(pipe):
    from unclip.rerank import clip_scores, pick_best
    assert pick_best(torch.tensor([0.1, 0.5, 0.2, 0.9, 0.0, 0.3]), candidates=3).tolist() == [1, 3]
    with pytest.raises(ValueError, match="5 scores do not split into groups of 3"):
        pick_best(torch.rand(5), candidates=3)
    images = torch.rand(2, 3, 16, 16) * 2 - 1  # the decoder's side; the CLIP reads 32 px
    z_t = F.normalize(torch.randn(2, 64), dim=-1)
    up = F.interpolate(images, size=(32, 32), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    expected = (F.normalize(pipe.clip.encode_image_pixels(up), dim=-1) * z_t).sum(-1)
    assert torch.allclose(clip_scores(pipe.clip, images, z_t), expected, atol=1e-6)
    with pytest.raises(ValueError, match="2 images but 1 text embeddings"):
        clip_scores(pipe.clip, images, z_t[:1])


def test_a_decoder_guide_travels_with_the_pipeline_and_guides_generation_only_when_asked(pipe, tmp_path):
    """Autoguidance (Karras et al. 2024): a weaker decoder stage saved and loaded with the pipeline; generation with
    config.autoguidance draws guide + s * (decoder - guide); the manipulations keep classifier-free guidance."""
    from unclip.clip import save_clip
    from unclip.decoder import save_decoder

    base = pipe.config.with_(candidates=1)
    guide = perturb(Decoder(DecoderConfig(unet=pipe.decoder.config.unet.with_(model_channels=8, head_channels=8),
                                          diffusion=V)), generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="no decoder_guide stage"):
        UnCLIP(clip=pipe.clip, decoder=pipe.decoder, prior=pipe.prior, config=base.with_(autoguidance=True))
    guided = UnCLIP(clip=pipe.clip, decoder=pipe.decoder, prior=pipe.prior, decoder_guide=guide,
                    config=base.with_(autoguidance=True))
    guided.save_pretrained(tmp_path / "model")
    back = UnCLIP.from_pretrained(tmp_path / "model")
    assert back.config.autoguidance and back.decoder_guide is not None
    assert all(torch.equal(back.decoder_guide.state_dict()[k], v) for k, v in guide.state_dict().items())

    captions = ["a red circle", "two blue squares"]
    seeded = lambda p: np.stack([np.asarray(im) for im in p(captions, seed=3, upsample=False)])  # noqa: E731
    plain = UnCLIP(clip=pipe.clip, decoder=pipe.decoder, prior=pipe.prior, config=base)
    z_i = guided.image_embeddings(captions, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        manual = pipe.decoder.sample(image_embedding=z_i, **pipe.decoder.caption_inputs(guided.tokens(captions),
                                                                                         clip=pipe.clip),
                                     steps=base.decoder.steps, sampler=base.decoder.sampler,
                                     guidance_scale=base.decoder.guidance_scale, guide=guide,
                                     generator=torch.Generator().manual_seed(1))
        through = guided.decode(z_i, captions=captions, generator=torch.Generator().manual_seed(1),
                                autoguidance=True)
    assert torch.equal(manual, through)
    assert not np.array_equal(seeded(guided), seeded(plain))
    from unclip.eval.harness import decoder_guidance
    assert decoder_guidance(guided) == "autoguidance 2" and decoder_guidance(plain) == "classifier-free 2"
    guided.config = base  # autoguidance off: the guide stage is there but unused
    assert np.array_equal(seeded(guided), seeded(plain))

    # the CLI turns it on and off, and refuses it for a pipeline without the stage
    parser = cli.build_parser()
    args = parser.parse_args(["generate", "a red circle", "--out", "x", "--model", str(tmp_path / "model"),
                              "--no-autoguidance"])
    assert cli._pipeline(args).config.autoguidance is False
    plain.save_pretrained(tmp_path / "plain")
    args = parser.parse_args(["generate", "a red circle", "--out", "x", "--model", str(tmp_path / "plain"),
                              "--autoguidance"])
    with pytest.raises(SystemExit, match="no decoder_guide stage"):
        cli._pipeline(args)
    # unclip assemble --decoder-guide writes a pipeline that guides by it
    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d", pipe.decoder)
    save_decoder(tmp_path / "g", guide)
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d"),
                     "--decoder-guide", str(tmp_path / "g"), "--out", str(tmp_path / "asm")]) == 0
    assert UnCLIP.from_pretrained(tmp_path / "asm").config.autoguidance
