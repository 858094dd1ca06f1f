"""`unclip train decoder|upsampler`: runs end to end on the engine, resumes exactly, writes a grid."""

import dataclasses
import json

import pytest
import torch

from unclip.clip import CLIP, preset, save_clip
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.decoder import UNetConfig, load_decoder
from unclip.decoder import train as decoder_train
from unclip.tokenizer import Tokenizer

from perturb import perturb

UNET = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=16)


def _saved_micro_clip(tmp_path) -> CLIP:
    """A one-layer 16 px CLIP with the Shapes tokenizer, saved as tmp_path/clip for train_decoder(clip_dir=...)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    clip = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1, image_size=16))
    clip.tokenizer = tokenizer
    save_clip(tmp_path / "clip", clip)
    return clip


def test_decoder_and_upsampler_train_resume_and_save(tmp_path, monkeypatch):
    _saved_micro_clip(tmp_path)
    base = decoder_train.RECIPES
    micro_decoder = base["tiny"].model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,), **UNET))
    micro_up = base["tiny-up-128"].model.with_(unet=UNetConfig(image_size=32, attention_resolutions=(), clip_dim=None,
                                                               text_width=None, low_res_channels=3, **UNET),
                                               low_res_size=8, crop_size=16)
    for name, model in (("tiny", micro_decoder), ("tiny-up-128", micro_up)):
        train = dataclasses.replace(base[name].train, steps=4, batch_size=4, checkpoint_every=2, warmup_steps=1,
                                    hook_every=0)
        # the decoder on a mix of forms of its own (resumed exactly too, and recorded in the run's config)
        forms = (1.0, 3.0, 3.0, 2.0) if name == "tiny" else None
        monkeypatch.setitem(base, name, decoder_train.DecoderRecipe(model=model, train=train, sample_steps=2,
                                                                    form_weights=forms))
        clip_dir = tmp_path / "clip" if name == "tiny" else None
        whole = decoder_train.train_decoder(preset_name=name, run_dir=tmp_path / f"{name}-a", clip_dir=clip_dir,
                                            progress=False)
        decoder_train.train_decoder(preset_name=name, run_dir=tmp_path / f"{name}-b", clip_dir=clip_dir, max_steps=2,
                                    progress=False)
        split = decoder_train.train_decoder(preset_name=name, run_dir=tmp_path / f"{name}-b", clip_dir=clip_dir,
                                            progress=False)
        a, b = load_decoder(whole).state_dict(), load_decoder(split).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "tiny-a" / "samples" / "step-00000004.png").is_file()  # the progress grid at the end
    recorded = json.loads((tmp_path / "tiny-a" / "config.json").read_text())["model"]
    assert recorded["form_weights"] == [1.0, 3.0, 3.0, 2.0]
    assert "form_weights" not in json.loads((tmp_path / "tiny-up-128-a" / "config.json").read_text())["model"]


def test_glide_baseline_trains_on_the_caption_alone(tmp_path, monkeypatch):
    """tiny-glide: the same decoder with no z_i input at all (issue 9's GLIDE-style row), GLIDE's 20% caption drop."""
    clip = _saved_micro_clip(tmp_path)
    recipe = decoder_train.RECIPES["tiny-glide"]
    assert recipe.model.unet.clip_dim is None and recipe.model.p_drop_text == 0.2
    assert recipe.train == decoder_train.RECIPES["tiny"].train  # the same budget as the unCLIP decoder
    model = recipe.model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,), clip_dim=None, **UNET))
    train = dataclasses.replace(recipe.train, steps=2, batch_size=4, warmup_steps=1, hook_every=2)
    monkeypatch.setitem(decoder_train.RECIPES, "tiny-glide", decoder_train.DecoderRecipe(model=model, train=train,
                                                                                          sample_steps=2))
    out = decoder_train.train_decoder(preset_name="tiny-glide", run_dir=tmp_path / "g", clip_dir=tmp_path / "clip",
                                      progress=False)
    decoder = load_decoder(out)
    assert decoder.config.unet.clip_dim is None and decoder.config.unet.text_width == clip.config.text_width
    assert not any("image_to" in name for name in decoder.state_dict())  # no z_i path to train
    assert (tmp_path / "g" / "samples" / "step-00000002.png").is_file()


def test_glide_baselines_differ_from_their_unclip_decoders_only_in_z_i():
    """Each GLIDE-style recipe is its unCLIP decoder's network and budget minus z_i (issue 9: equal training)."""
    recipes = decoder_train.RECIPES
    for glide, unclip in (("tiny-glide", "tiny"), ("tiny-16-rb1-glide", "tiny-16-rb1")):
        g, u = recipes[glide], recipes[unclip]
        assert g.train == u.train, glide
        assert g.model.unet.clip_dim is None and u.model.unet.clip_dim is not None, glide
        assert g.model.unet.with_(clip_dim=u.model.unet.clip_dim) == u.model.unet, glide
        assert g.model.diffusion == u.model.diffusion and g.model.p_drop_text == 0.2, glide


def test_stage_of_each_recipe_follows_its_model():
    for name, recipe in decoder_train.RECIPES.items():
        expected = "upsampler" if name.startswith("tiny-up") else "decoder"
        assert decoder_train.STAGE_OF[name] == expected, name


def test_init_from_starts_a_run_from_saved_weights_and_refuses_another_config(tmp_path, monkeypatch):
    """`--init-from DIR` (fine-tuning, e.g. tiny-16-rb1-ft): the run's first weights are the saved model's."""
    clip = _saved_micro_clip(tmp_path)
    model = decoder_train.RECIPES["tiny"].model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,),
                                                                      **UNET))
    train = dataclasses.replace(decoder_train.RECIPES["tiny"].train, steps=2, batch_size=4, warmup_steps=1,
                                hook_every=0, lr=1e-9)
    monkeypatch.setitem(decoder_train.RECIPES, "tiny", decoder_train.DecoderRecipe(model=model, train=train))
    first = load_decoder(decoder_train.train_decoder(preset_name="tiny", run_dir=tmp_path / "a",
                                                     clip_dir=tmp_path / "clip", progress=False))
    # perturb the saved weights so that a run which ignored them (random init, same seed) could not match
    with torch.no_grad():
        for p in first.parameters():
            p.add_(0.01)
    decoder_train.save_decoder(tmp_path / "start", first)
    tuned = load_decoder(decoder_train.train_decoder(preset_name="tiny", run_dir=tmp_path / "b",
                                                     clip_dir=tmp_path / "clip", progress=False,
                                                     init_from=tmp_path / "start"))
    start = first.state_dict()
    # two steps at lr 1e-9 (Adam moves each weight by about lr) and the EMA of them: within 1e-6 of the start
    assert all(torch.allclose(tuned.state_dict()[k], start[k], atol=1e-6) for k in start)
    other = model.with_(unet=model.unet.with_(model_channels=8, head_channels=8))
    decoder_train.save_decoder(tmp_path / "narrow", decoder_train.Decoder(
        other.with_(unet=other.unet.with_(clip_dim=clip.config.embed_dim, text_width=clip.config.text_width))))
    with pytest.raises(ValueError, match="config differs from the preset's Decoder.*unet"):
        decoder_train.train_decoder(preset_name="tiny", run_dir=tmp_path / "c", clip_dir=tmp_path / "clip",
                                    progress=False, init_from=tmp_path / "narrow")


def test_channels_last_fine_tunes_a_saved_model_of_either_layout_and_is_kept_for_resuming(tmp_path, monkeypatch):
    """`--channels-last`: the UNet runs in NHWC and is saved so; its start may be an NCHW model (layout only)."""
    _saved_micro_clip(tmp_path)
    model = decoder_train.RECIPES["tiny"].model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,),
                                                                      **UNET))
    train = dataclasses.replace(decoder_train.RECIPES["tiny"].train, steps=2, batch_size=4, warmup_steps=1,
                                hook_every=0, lr=1e-9)
    monkeypatch.setitem(decoder_train.RECIPES, "tiny", decoder_train.DecoderRecipe(model=model, train=train))
    run = dict(preset_name="tiny", clip_dir=tmp_path / "clip", progress=False)
    plain = perturb(load_decoder(decoder_train.train_decoder(run_dir=tmp_path / "a", **run)))
    decoder_train.save_decoder(tmp_path / "start", plain)
    tuned = load_decoder(decoder_train.train_decoder(run_dir=tmp_path / "b", init_from=tmp_path / "start",
                                                     channels_last=True, **run))
    assert tuned.config.unet.channels_last and not plain.config.unet.channels_last
    conv = next(m for m in tuned.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.allclose(tuned.state_dict()[k], v, atol=1e-6) for k, v in plain.state_dict().items())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    z, text = torch.randn(2, plain.config.unet.clip_dim), torch.randn(2, 5, plain.config.unet.text_width)
    with torch.no_grad():
        same = [m.net(x, t, image_embedding=z, text_states=text) for m in (plain, tuned)]
    assert torch.allclose(same[0], same[1], atol=1e-4)  # the same function, up to rounding
    with pytest.raises(ValueError, match="another model config"):  # the run was begun in NHWC
        decoder_train.train_decoder(run_dir=tmp_path / "b", init_from=tmp_path / "start", **run)


def test_init_from_grows_a_z_i_mlp_onto_a_saved_decoder_without_changing_its_output(tmp_path):
    """UNetConfig.image_mlp_width may be added to a saved decoder (tiny-16-rb1-mlp-ft4): its last layer starts at
    zero, so the grown decoder computes what the saved one did, and training then moves the MLP."""
    torch.manual_seed(0)
    unet = UNetConfig(image_size=16, attention_resolutions=(8,), clip_dim=8, text_width=12, **UNET)
    small = decoder_train.Decoder(decoder_train.RECIPES["tiny"].model.with_(unet=unet))
    perturb(small)  # trained-looking weights: the zero-initialised output layers made non-zero
    decoder_train.save_decoder(tmp_path / "small", small)
    grown = decoder_train.Decoder(small.config.with_(unet=unet.with_(image_mlp_width=32)))
    decoder_train._load_initial_weights(grown, tmp_path / "small")
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 500, 999])
    z, text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1), torch.randn(3, 5, 12)
    before = small.net(x, t, image_embedding=z, text_states=text)
    assert torch.equal(grown.net(x, t, image_embedding=z, text_states=text), before)
    # the MLP is trainable: one SGD step on the loss changes its last layer and with it the output
    grown.loss(images=x.clamp(-1, 1), image_embedding=z, text_states=text).backward()
    last = grown.net.conditioning.image_mlp[-1].weight
    assert last.grad is not None and last.grad.abs().sum() > 0
    with torch.no_grad():
        last.sub_(0.1 * last.grad / last.grad.norm())
    assert not torch.allclose(grown.net(x, t, image_embedding=z, text_states=text), before)
    # the other way round is refused: a saved MLP the preset's decoder has no place for
    decoder_train.save_decoder(tmp_path / "grown", grown)
    with pytest.raises(ValueError, match="image_mlp_width 32 into one with None: a z_i MLP can be added, not"):
        decoder_train._load_initial_weights(small, tmp_path / "grown")


def test_image_mlp_width_is_checked():
    with pytest.raises(ValueError, match="image_mlp_width=16 needs z_i"):
        UNetConfig(image_size=16, attention_resolutions=(8,), clip_dim=None, image_mlp_width=16, **UNET)
    with pytest.raises(ValueError, match="image_mlp_width must be None or a positive integer, got 0"):
        UNetConfig(image_size=16, attention_resolutions=(8,), image_mlp_width=0, **UNET)


def test_init_from_accepts_other_training_only_diffusion_settings_and_refuses_another_schedule(tmp_path):
    """Timestep sampling, loss weights (TRAINING_ONLY), conditioning dropout and pixel weights (TRAINING_ONLY_MODEL)
    shape training, not the network: a run may start from a model trained with others (tiny-16-rb1-sc-focus7-ft5,
    -cap20-ft6); a schedule or a prediction target it may not."""
    torch.manual_seed(0)
    unet = UNetConfig(image_size=16, attention_resolutions=(8,), clip_dim=8, text_width=12, **UNET)
    saved = perturb(decoder_train.Decoder(decoder_train.RECIPES["tiny"].model.with_(unet=unet)))
    decoder_train.save_decoder(tmp_path / "saved", saved)
    diffusion = saved.config.diffusion
    focused = decoder_train.Decoder(saved.config.with_(
        p_drop_text=0.2, p_drop_image=0.05, foreground_weight=4.0,
        diffusion=dataclasses.replace(diffusion, timestep_focus_steps=7, min_snr_gamma=None,
                                      timestep_sampling="logit-normal")))
    decoder_train._load_initial_weights(focused, tmp_path / "saved")
    assert all(torch.equal(focused.state_dict()[k], v) for k, v in saved.state_dict().items())
    for change in ({"schedule": "linear", "zero_terminal_snr": False}, {"prediction": "x0"}):
        other = decoder_train.Decoder(saved.config.with_(diffusion=dataclasses.replace(diffusion, **change)))
        with pytest.raises(ValueError, match=r"config differs from the preset's Decoder \(in \['diffusion'\]\)"):
            decoder_train._load_initial_weights(other, tmp_path / "saved")
