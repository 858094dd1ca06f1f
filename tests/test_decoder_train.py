"""`unclip train decoder|upsampler`: runs end to end on the engine, resumes exactly, writes a grid."""

import dataclasses

import torch

from unclip.clip import CLIP, preset, save_clip
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.decoder import UNetConfig, load_decoder
from unclip.decoder import train as decoder_train
from unclip.tokenizer import Tokenizer

UNET = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=16)


def test_decoder_and_upsampler_train_resume_and_save(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    clip = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1,
                                     image_size=16))
    clip.tokenizer = tokenizer
    save_clip(tmp_path / "clip", clip)
    base = decoder_train.RECIPES
    micro_decoder = base["tiny"].model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,), **UNET))
    micro_up = base["tiny-up-128"].model.with_(unet=UNetConfig(image_size=32, attention_resolutions=(), clip_dim=None,
                                                               text_width=None, low_res_channels=3, **UNET),
                                               low_res_size=8, crop_size=16)
    for name, model in (("tiny", micro_decoder), ("tiny-up-128", micro_up)):
        train = dataclasses.replace(base[name].train, steps=4, batch_size=4, checkpoint_every=2, warmup_steps=1,
                                    hook_every=0)
        monkeypatch.setitem(base, name, decoder_train.DecoderRecipe(model=model, train=train, sample_steps=2))
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
