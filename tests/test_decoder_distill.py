"""Guidance distillation (decoder/distill.py) and the pipeline's distilled decoder stage, on tiny random stages."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from unclip import cli
from unclip.clip import save_clip
from unclip.data import collate_image_caption
from unclip.data.sources import ShapesItems
from unclip.decoder import Decoder, DecoderConfig, load_decoder, save_decoder
from unclip.decoder import distill
from unclip.decoder.decoder import run_sampler
from unclip.decoder.train import decoder_conditioning
from unclip.eval.harness import decoder_guidance, nfe_per_image
from unclip.pipeline import UnCLIP

from perturb import perturb
from test_pipeline import V, pipe  # noqa: F401  (the tiny random pipeline fixture)


def _batch(n=3, size=16):
    data = ShapesItems("train", size=size)
    return collate_image_caption([data[i] for i in range(n)])


def _self_conditioned(pipe, seed=5):
    cfg = DecoderConfig(unet=pipe.decoder.config.unet.with_(self_condition=True), diffusion=V)
    return perturb(Decoder(cfg), generator=torch.Generator().manual_seed(seed))


def _with_decoder(pipe, net, **config):
    return UnCLIP(clip=pipe.clip, decoder=net, prior=pipe.prior, config=pipe.config.with_(candidates=1, **config))


def test_trajectory_rows_are_the_guided_samplers_own_steps(pipe):
    """Replaying the recorded guided outputs through the sampler, with the same noise, redraws the teacher's image:
    the rows are exactly the steps generation takes; the first step carries no estimate."""
    teacher = _with_decoder(pipe, _self_conditioned(pipe))
    batch = _batch()
    z_i, caption = decoder_conditioning(teacher.decoder, teacher.clip, batch["image"], batch["caption"])
    rows = distill.guided_trajectory(teacher, z_i=z_i, caption=caption, generator=torch.Generator().manual_seed(1))
    steps, b = teacher.config.decoder.steps, len(z_i)
    assert rows["x_t"].shape == (steps * b, 3, 16, 16) and rows["t"].shape == (steps * b,)
    assert torch.all(rows["t"][:b] > rows["t"][-b:]) and not rows["carried"][:b].any() and rows["carried"][b:].any()
    drawn = teacher.decode(z_i, captions=batch["caption"], generator=torch.Generator().manual_seed(1))
    replay = iter(rows["target"].split(b))
    unet = teacher.decoder.config.unet
    again = run_sampler(lambda x, t: next(replay), teacher.decoder.diffusion, (b, 3, unet.image_size, unet.image_size),
                        sampler=teacher.config.decoder.sampler, x_T=None, steps=steps, eta=0.0, threshold="static",
                        generator=torch.Generator().manual_seed(1), device="cpu", dtype=torch.float32)
    assert torch.equal(drawn, again)


def test_the_loss_is_zero_for_an_unguided_teacher_and_falls_as_the_student_learns_a_guided_one(pipe):
    """Unguided, the teacher's own copy already outputs the targets (it carries the very estimates the rows record),
    so the loss is zero; guided at 2 it is not, and a few steps on one batch lower it (by 6x in 15 Adam steps here)."""
    decoder = _self_conditioned(pipe)
    batch = _batch(4)
    unguided = _with_decoder(pipe, decoder, decoder=replace(pipe.config.decoder, guidance_scale=1.0))
    student = Decoder(decoder.config)
    student.load_state_dict(decoder.state_dict())
    loss = distill.distillation_loss(unguided)(student, batch, torch.Generator().manual_seed(0))["loss"]
    assert float(loss.detach()) < 1e-12

    guided = distill.distillation_loss(_with_decoder(pipe, decoder))
    first = float(guided(student, batch, torch.Generator().manual_seed(0))["loss"].detach())
    assert first > 1e-6
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)
    for _ in range(15):
        opt.zero_grad()
        guided(student, batch, torch.Generator().manual_seed(0))["loss"].backward()
        opt.step()
    last = float(guided(student, batch, torch.Generator().manual_seed(0))["loss"].detach())
    assert last < 0.7 * first
    assert all(p.grad is None for p in decoder.parameters())  # the teacher stays frozen


def test_a_distilled_decoder_is_trained_assembled_and_sampled_unguided(pipe, tmp_path, monkeypatch):
    tiny = distill.DistillRecipe(train=replace(distill.DISTILL_RECIPES["tiny"].train, steps=2, batch_size=2,
                                               warmup_steps=1, checkpoint_every=1))
    monkeypatch.setitem(distill.DISTILL_RECIPES, "tiny", tiny)
    teacher = _with_decoder(pipe, pipe.decoder)
    teacher.save_pretrained(tmp_path / "teacher")
    out = distill.train_distilled_decoder(model_dir=tmp_path / "teacher", run_dir=tmp_path / "run", progress=False)
    student = load_decoder(out)
    unet = teacher.decoder.config.unet
    assert student.config == teacher.decoder.config.with_(unet=unet.with_(channels_last=True))
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(),
                                                      teacher.decoder.state_dict().values()))
    _with_decoder(pipe, pipe.decoder, decoder=replace(pipe.config.decoder, guidance_scale=1.0)).save_pretrained(
        tmp_path / "unguided")
    with pytest.raises(ValueError, match="nothing to distil"):
        distill.train_distilled_decoder(model_dir=tmp_path / "unguided", run_dir=tmp_path / "run2", progress=False)

    # unclip assemble --decoder-distilled writes a pipeline that samples it, one evaluation a decoder step
    save_clip(tmp_path / "c", pipe.clip)
    save_decoder(tmp_path / "d", pipe.decoder)
    assert cli.main(["assemble", "--clip", str(tmp_path / "c"), "--decoder", str(tmp_path / "d"),
                     "--decoder-distilled", str(out), "--out", str(tmp_path / "asm")]) == 0
    assembled = UnCLIP.from_pretrained(tmp_path / "asm")
    assert assembled.config.distilled and assembled.decoder_distilled is not None
    assembled.config = assembled.config.with_(decoder=pipe.config.decoder, prior_kind="text-embedding")
    steps = pipe.config.decoder.steps
    assert nfe_per_image(assembled, "text-embedding", upsample=False) == steps
    assert decoder_guidance(assembled) == "distilled from classifier-free 2"
    captions = ["a red circle", "two blue squares"]
    z_i = assembled.image_embeddings(captions)
    with torch.no_grad():
        manual = assembled.decoder_distilled.sample(
            image_embedding=z_i, **assembled.decoder.caption_inputs(assembled.tokens(captions), clip=assembled.clip),
            steps=steps, sampler=pipe.config.decoder.sampler, generator=torch.Generator().manual_seed(2))
    through = assembled.decode(z_i, captions=captions, generator=torch.Generator().manual_seed(2), distilled=True)
    assert torch.equal(manual, through)
    images = np.stack([np.asarray(im) for im in assembled(captions, seed=3, upsample=False)])
    assembled.config = assembled.config.with_(distilled=False)
    assert nfe_per_image(assembled, "text-embedding", upsample=False) == 2 * steps
    assert not np.array_equal(images, np.stack([np.asarray(im) for im in assembled(captions, seed=3,
                                                                                    upsample=False)]))
    with pytest.raises(ValueError, match="guidance is built in"):
        assembled.decode(z_i, captions=captions, distilled=True, guidance_scale=2.0)
    with pytest.raises(ValueError, match="no decoder_distilled stage"):
        _with_decoder(pipe, pipe.decoder, distilled=True)

    # the CLI: guidance options sample the guided decoder; --distilled refuses them and a pipeline without the stage
    parser = cli.build_parser()
    model = ["--out", "x", "--model", str(tmp_path / "asm")]
    assert cli._pipeline(parser.parse_args(["generate", "a red circle", *model])).config.distilled
    guided = cli._pipeline(parser.parse_args(["generate", "a red circle", *model, "--guidance", "3"]))
    assert not guided.config.distilled and guided.config.decoder.guidance_scale == 3
    with pytest.raises(SystemExit, match="guidance is built in"):
        cli._pipeline(parser.parse_args(["generate", "a red circle", *model, "--distilled", "--guidance", "3"]))
    with pytest.raises(SystemExit, match="no decoder_distilled stage"):
        cli._pipeline(parser.parse_args(["generate", "a red circle", "--out", "x", "--model",
                                         str(tmp_path / "teacher"), "--distilled"]))


@pytest.mark.parametrize("argv, message", [
    (["train", "decoder-distill", "--run-dir", "r"], "--model DIR"),
    (["train", "decoder-distill", "--run-dir", "r", "--model", "m", "--clip", "c"], "do not apply"),
    (["train", "decoder-distill", "--run-dir", "r", "--model", "m", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "decoder", "--run-dir", "r", "--model", "m", "--clip", "c"], "--model is for decoder-distill"),
])
def test_the_cli_refuses_a_distillation_it_cannot_run(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv)
