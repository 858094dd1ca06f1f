"""`unclip train all`: every stage in order into one run directory, then a loadable pipeline; a rerun resumes."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unclip import train_all as ta
from unclip.clip import train as clip_train
from unclip.decoder import DecoderConfig, UNetConfig, load_decoder
from unclip.decoder import train as decoder_train
from unclip.decoder.config import network_config
from unclip.decoder.grow import GROWABLE
from unclip.pipeline import PipelineConfig, UnCLIP
from unclip.prior import ARPriorConfig, DiffusionPriorConfig
from unclip.prior import train as prior_train

UNET = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=16)


def _short(train, **kw):
    return dataclasses.replace(train, steps=2, batch_size=4, checkpoint_every=1, warmup_steps=1, **kw)


def _micro_recipes(monkeypatch) -> None:
    """Two-step recipes named "micro" for every stage (and "micro-up" for the upsampler)."""
    _register_micro_recipes(monkeypatch.setitem)


def _register_micro_recipes(setitem) -> None:
    c = clip_train.RECIPES["tiny"]
    setitem(clip_train.RECIPES, "micro", clip_train.CLIPRecipe(
        model=c.model.with_(image_size=16, vision_layers=1, text_layers=1), train=_short(c.train), negatives=1))
    small = dict(width=32, layers=1, heads=2)
    for kind, cfg in (("diffusion", DiffusionPriorConfig(**small)),
                      ("autoregressive", ARPriorConfig(**small, max_components=4, buckets=32))):
        r = prior_train.RECIPES[kind]["tiny"]
        setitem(prior_train.RECIPES[kind], "micro", prior_train.PriorRecipe(
            model=cfg, train=_short(r.train), pairs=16))
    d, u = decoder_train.RECIPES["tiny"], decoder_train.RECIPES["tiny-up-128"]
    setitem(decoder_train.RECIPES, "micro", decoder_train.DecoderRecipe(
        model=d.model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,), **UNET)),
        train=_short(d.train, hook_every=0), sample_steps=2))
    setitem(decoder_train.RECIPES, "micro-up", decoder_train.DecoderRecipe(
        model=u.model.with_(unet=UNetConfig(image_size=32, attention_resolutions=(), clip_dim=None, text_width=None,
                                            low_res_channels=3, **UNET), low_res_size=16, crop_size=16),
        train=_short(u.train, hook_every=0)))
    setitem(decoder_train.STAGE_OF, "micro", "decoder")
    setitem(decoder_train.STAGE_OF, "micro-up", "upsampler")
    setitem(ta.PRESETS, "micro", ta.PipelinePreset(clip="micro", prior="micro", ar_prior="micro", decoder="micro",
                                                   upsamplers=("micro-up",), sampling=ta.PipelineConfig(),
                                                   decoder_steps=1, decoder_finetunes=("micro", "micro")))


def _setitem(mapping, key, value) -> None:
    mapping[key] = value


def register_micro_in_lane() -> None:
    """run_lanes' setup: a lane's process starts from a fresh interpreter, without the test's monkeypatched recipes."""
    _register_micro_recipes(_setitem)


def break_the_upsampler_in_lane() -> None:
    """run_lanes' setup for a lane whose upsampler fails after both priors have trained."""
    register_micro_in_lane()
    train_decoder = ta.train_decoder

    def fail_on_the_upsampler(*, preset_name, **kw):
        if preset_name == "micro-up":
            raise RuntimeError("the upsampler broke")
        return train_decoder(preset_name=preset_name, **kw)

    ta.train_decoder = fail_on_the_upsampler


def test_train_all_then_rerun(tmp_path, monkeypatch):
    _micro_recipes(monkeypatch)
    logs = []
    out = ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=logs.append)
    assert len(logs) == 7 and out == tmp_path / "pipeline"
    # the decoder stopped at the preset's decoder_steps (1), short of its recipe's 2 steps
    assert [p.name for p in (tmp_path / "decoder" / "checkpoints").iterdir()] == ["step-00000001"]
    # each later cycle started from the previous cycle's weights and trained its whole recipe; the last one ships
    for sub, previous in (("decoder-ft", "decoder"), ("decoder-ft2", "decoder-ft")):
        assert json.loads((tmp_path / sub / "config.json").read_text())["model"]["init_from"] == str(
            tmp_path / previous / "model")
        assert max(p.name for p in (tmp_path / sub / "checkpoints").iterdir()) == "step-00000002"
        before = load_decoder(tmp_path / previous / "model").state_dict()
        after = load_decoder(tmp_path / sub / "model").state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in after)  # it trained on
    pipe = UnCLIP.from_pretrained(out)
    tuned = load_decoder(tmp_path / "decoder-ft2" / "model").state_dict()
    assert all(torch.equal(v.float(), tuned[k].half().float()) for k, v in pipe.decoder.state_dict().items())
    assert pipe.sizes == [16, 32] and pipe.prior is not None and pipe.ar_prior is not None
    first = {k: v.clone() for k, v in pipe.decoder.state_dict().items()}
    ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=logs.append)  # nothing left to train
    again = UnCLIP.from_pretrained(out).decoder.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["ar-prior", "clip", "decoder", "decoder-ft", "decoder-ft2",
                                                            "pipeline", "prior", "upsampler"]


def test_train_all_keeps_an_earlier_step_of_the_decoder_as_its_guide(tmp_path, monkeypatch):
    """decoder_guide_steps: the first decoder run's weights at that step guide the shipped one (autoguidance)."""
    _micro_recipes(monkeypatch)
    sampling = ta.PipelineConfig(autoguidance=True)
    monkeypatch.setitem(ta.PRESETS, "micro", ta.PipelinePreset(clip="micro", prior="micro", ar_prior="micro",
                                                               decoder="micro", upsamplers=("micro-up",),
                                                               sampling=sampling, decoder_guide_steps=1))
    out = ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)
    guide, decoder = (load_decoder(tmp_path / name / "model" if name == "decoder" else tmp_path / name).state_dict()
                      for name in ("decoder-guide", "decoder"))
    assert any(not torch.equal(guide[k], decoder[k]) for k in guide)  # step 1 and step 2 differ
    assert max(p.name for p in (tmp_path / "decoder" / "checkpoints").iterdir()) == "step-00000002"
    pipe = UnCLIP.from_pretrained(out)
    assert pipe.config.autoguidance
    assert all(torch.equal(v.float(), guide[k].half().float()) for k, v in pipe.decoder_guide.state_dict().items())
    ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)  # a rerun keeps it
    again = load_decoder(tmp_path / "decoder-guide").state_dict()
    assert all(torch.equal(guide[k], again[k]) for k in guide)
    # a decoder run past the guide's step, its guide never kept, cannot make one
    import shutil
    shutil.rmtree(tmp_path / "decoder-guide")
    with pytest.raises(ValueError, match="at step 2, past the guide's step 1"):
        ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)


def test_shipped_model_matches_its_preset():
    """models/shapes-tiny is what `unclip train all --preset shapes-tiny` makes: same decoder recipe, same sampling."""
    shipped = Path(__file__).resolve().parents[1] / "models" / "shapes-tiny"
    preset = ta.PRESETS["shapes-tiny"]
    record = json.loads((shipped / "pipeline.json").read_text())
    assert PipelineConfig.from_dict(record["config"]) == (preset.distilled_sampling or preset.sampling)
    decoder = json.loads((shipped / "decoder" / "decoder_config.json").read_text())
    # the shipped decoder is the last cycle's; each cycle starts from the one before, with its architecture or one
    # grown from it (grow.py: only GROWABLE fields differ), trained with the same or other training-only settings
    assert preset.decoder_finetunes
    assert DecoderConfig.from_dict(decoder["config"]) == decoder_train.RECIPES[preset.decoder_finetunes[-1]].model
    # its distilled decoder, if any, is a copy of the decoder's architecture
    if preset.distill:
        from unclip.decoder import distill

        student = json.loads((shipped / "decoder_distilled" / "decoder_config.json").read_text())
        layout = distill.DISTILL_RECIPES[preset.distill].channels_last  # NHWC or not: only rounding differs
        want = DecoderConfig.from_dict(decoder["config"])
        assert record["stages"]["decoder_distilled"]
        assert DecoderConfig.from_dict(student["config"]) == want.with_(unet=want.unet.with_(channels_last=layout))
    # its judge, if any, is its recipe's, reading the shipped CLIP's widths
    if preset.judge:
        from unclip.judge import JudgeConfig
        from unclip.judge.train import RECIPES as JUDGE_RECIPES

        judge = json.loads((shipped / "judge" / "judge_config.json").read_text())
        clip_cfg = json.loads((shipped / "clip" / "clip_config.json").read_text())
        assert record["stages"]["judge"]
        want = JUDGE_RECIPES[preset.judge].model
        assert judge["kind"] == "judge" and JudgeConfig.from_dict(judge["config"]) == want.with_(
            vision_width=clip_cfg["vision_width"], text_width=clip_cfg["text_width"])
    # its guide is the first decoder run at an earlier step: that recipe's architecture
    guide = json.loads((shipped / "decoder_guide" / "decoder_config.json").read_text())
    assert preset.decoder_guide_steps and record["stages"]["decoder_guide"]
    assert DecoderConfig.from_dict(guide["config"]) == decoder_train.RECIPES[preset.decoder].model
    # its diffusion prior is the preset's recipe, fitted to the shipped CLIP's sizes and tokenizer
    prior = json.loads((shipped / "prior" / "prior_config.json").read_text())
    clip = json.loads((shipped / "clip" / "clip_config.json").read_text())
    want = prior_train.RECIPES["diffusion"][preset.prior].model.with_(
        embed_dim=clip["embed_dim"], text_width=clip["text_width"], context_length=clip["context_length"],
        vocab_size=clip["vocab_size"])
    assert DiffusionPriorConfig.from_dict(prior["config"]) == want
    chain = [decoder_train.RECIPES[name].model for name in (preset.decoder, *preset.decoder_finetunes)]
    for before, after in zip(chain, chain[1:]):
        mine, theirs = network_config(after), network_config(before)
        assert mine == theirs | {"unet": theirs["unet"] | {k: mine["unet"][k] for k in GROWABLE}}


def test_train_all_shares_the_embedded_pairs_between_the_priors(tmp_path, monkeypatch):
    """Both priors' recipes read the same scenes through the same CLIP: the autoregressive prior reads a copy of the
    diffusion prior's embedded pairs instead of rendering and embedding them again."""
    _micro_recipes(monkeypatch)
    calls = []
    embed = prior_train.embed_items
    monkeypatch.setattr(prior_train, "embed_items", lambda *a, **kw: calls.append(1) or embed(*a, **kw))
    ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)
    assert len(calls) == 1
    name = prior_train.EMBEDDINGS_FILE
    assert (tmp_path / "ar-prior" / name).read_bytes() == (tmp_path / "prior" / name).read_bytes()


def test_train_all_in_two_lanes_gives_what_one_lane_gives(tmp_path, monkeypatch):
    """--jobs 2: the decoder's runs in one process, the priors and upsampler in another, the same weights as in turn.
    Every training runs on one thread, as each lane does: a float sum split over two threads rounds otherwise."""
    _micro_recipes(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = ta.train_all(preset_name="micro", run_dir=tmp_path / "one", progress=False, log=lambda text: None)
        logs = []
        two = ta.train_all(preset_name="micro", run_dir=tmp_path / "two", progress=False, log=logs.append, jobs=2,
                           threads=2, lane_setup=register_micro_in_lane)
        assert "two lanes of 1 thread each" in logs[1]
        for stage in ("clip", "prior", "ar_prior", "decoder", "upsampler1"):
            a, b = (load_file(str(out / stage / "model.safetensors")) for out in (one, two))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
        names = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("one", "two")]
        assert names[0] == names[1]
        before = load_file(str(two / "decoder" / "model.safetensors"))
        ta.train_all(preset_name="micro", run_dir=tmp_path / "two", progress=False, log=lambda text: None, jobs=2,
                     threads=2, lane_setup=register_micro_in_lane)  # a rerun finds every stage done
        after = load_file(str(two / "decoder" / "model.safetensors"))
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert max(p.name for p in (tmp_path / "two" / "decoder-ft2" / "checkpoints").iterdir()) == "step-00000002"
    finally:
        torch.set_num_threads(threads)


def test_train_all_in_two_lanes_names_the_lane_that_failed(tmp_path, monkeypatch):
    _micro_recipes(monkeypatch)
    with pytest.raises(RuntimeError, match=r"the priors lane \(exit code 1\) failed.*Rerun the same command") as err:
        ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None, jobs=2,
                     threads=2, lane_setup=break_the_upsampler_in_lane)
    assert (tmp_path / "ar-prior" / "model").is_dir()  # what finished before the error stays finished
    assert not (tmp_path / "upsampler").exists() and not (tmp_path / "pipeline").exists()
    assert "decoder lane (exit" not in str(err.value)  # the lane stopped because of it is not called failed
    with pytest.raises(ValueError, match="jobs must be 1 or 2.*got 3"):
        ta.train_all(preset_name="micro", run_dir=tmp_path, jobs=3)


def test_lane_progress_reads_the_last_logged_step(tmp_path):
    from unclip.train_parallel import lane_runs, logged_step

    assert logged_step(tmp_path) == 0  # nothing logged yet
    (tmp_path / "metrics.jsonl").write_text('{"step": 25, "loss": 1.0}\n{"step": 50, "loss": 0.9}\n')
    assert logged_step(tmp_path) == 50
    (tmp_path / "metrics.jsonl").write_text('{"step": 25, "loss": 1.0}\n{"step": 5')  # a line half written
    assert logged_step(tmp_path) == 0
    runs = lane_runs(ta.PRESETS["shapes-2h"], tmp_path)  # what each bar counts: every run's steps, in lane order
    assert [(run.name, steps) for run, steps in runs["decoder"]] == [("decoder", 7500)]
    assert [run.name for run, _ in runs["priors"]] == ["prior", "ar-prior", "upsampler"]


def test_train_all_distils_the_guided_decoder_and_ships_it_with_a_judge(tmp_path, monkeypatch):
    """distill: once the pipeline is written, its guided decoder is distilled from it (DIR/decoder-distill) and the
    pipeline carries the student and samples it as distilled_sampling says; judge: a judge trained on the run's CLIP
    (DIR/judge) re-ranks its candidates; a rerun changes nothing."""
    from unclip.decoder import distill
    from unclip.judge import JudgeConfig, load_judge
    from unclip.judge import train as judge_train
    from unclip.pipeline import StageSampling

    _micro_recipes(monkeypatch)
    monkeypatch.setitem(distill.DISTILL_RECIPES, "micro", distill.DistillRecipe(
        train=_short(distill.DISTILL_RECIPES["tiny"].train)))
    monkeypatch.setitem(judge_train.RECIPES, "micro", dataclasses.replace(
        judge_train.RECIPES["tiny"], model=JudgeConfig(width=32, layers=1, heads=2),
        train=_short(judge_train.RECIPES["tiny"].train)))
    sampling = ta.PipelineConfig(decoder=StageSampling(steps=2, guidance_scale=2.0))
    with pytest.raises(ValueError, match="both distill and distilled_sampling"):
        ta.PipelinePreset(clip="micro", prior="micro", ar_prior="micro", decoder="micro", upsamplers=(),
                          sampling=sampling, distill="micro")
    monkeypatch.setitem(ta.PRESETS, "micro", ta.PipelinePreset(
        clip="micro", prior="micro", ar_prior="micro", decoder="micro", upsamplers=("micro-up",), sampling=sampling,
        distill="micro", distilled_sampling=sampling.with_(distilled=True, candidates=3, judge=True), judge="micro"))
    out = ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)
    pipe = UnCLIP.from_pretrained(out)
    assert pipe.config.distilled and pipe.config.candidates == 3 and pipe.decoder_distilled is not None
    assert pipe.config.judge and json.loads((tmp_path / "judge" / "config.json").read_text())["model"]["clip"] == str(
        tmp_path / "clip" / "model")
    judge = load_judge(tmp_path / "judge" / "model").state_dict()
    assert all(torch.equal(v.float(), judge[k].half().float()) for k, v in pipe.judge.state_dict().items())
    record = json.loads((tmp_path / "decoder-distill" / "config.json").read_text())["model"]
    assert record["distilled_from"] == str(out) and record["teacher_sampling"]["guidance_scale"] == 2.0
    student = load_decoder(tmp_path / "decoder-distill" / "model").state_dict()
    shipped = pipe.decoder_distilled.state_dict()
    assert all(torch.equal(v.float(), student[k].half().float()) for k, v in shipped.items())
    assert any(not torch.equal(v, pipe.decoder.state_dict()[k]) for k, v in shipped.items())  # it trained
    ta.train_all(preset_name="micro", run_dir=tmp_path, progress=False, log=lambda text: None)  # nothing left to train
    again = UnCLIP.from_pretrained(out)
    assert again.config == pipe.config
    assert all(torch.equal(v, shipped[k]) for k, v in again.decoder_distilled.state_dict().items())
    assert all(torch.equal(v, pipe.judge.state_dict()[k]) for k, v in again.judge.state_dict().items())
