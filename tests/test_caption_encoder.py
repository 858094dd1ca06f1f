"""The decoder's own caption encoder (GLIDE §2.2): masks, padding, training through the decoder's loss, files,
the pipeline, and the errors that keep the two kinds of caption input apart."""

import json

import pytest
import torch

from unclip.clip import CLIP, preset
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.decoder import Decoder, DecoderConfig, UNetConfig, load_decoder, save_decoder
from unclip.decoder.caption_encoder import CaptionEncoder, CaptionEncoderConfig
from unclip.decoder.train import decoder_conditioning
from unclip.diffusion import DiffusionConfig
from unclip.pipeline import PipelineConfig, StageSampling, UnCLIP
from unclip.tokenizer import Tokenizer

ENCODER = CaptionEncoderConfig(vocab_size=50, context_length=10, width=16, layers=2, heads=2)
UNET = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                  head_channels=16, clip_dim=8, text_width=16)
V = DiffusionConfig(prediction="v", zero_terminal_snr=True)


def _tokens():
    """Three captions of 4, 7 and 2 real tokens ([SOT] ... [EOT], EOT = 49 the largest id), zero-padded to 10."""
    rows = [[48, 5, 6, 49], [48, 1, 2, 3, 4, 5, 49], [48, 49]]
    return torch.tensor([r + [0] * (10 - len(r)) for r in rows])


def _decoder(seed=0, encoder=ENCODER):
    torch.manual_seed(seed)
    decoder = Decoder(DecoderConfig(unet=UNET, diffusion=V, caption_encoder=encoder))
    with torch.no_grad():  # perturb the zero-initialised output layers so outputs depend on every input
        for p in decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return decoder.eval()


def test_states_cover_real_tokens_and_ignore_padding():
    torch.manual_seed(0)
    enc = CaptionEncoder(ENCODER).eval()
    tokens = _tokens()
    states, mask = enc(tokens)
    assert states.shape == (3, 10, 16) and mask.tolist()[0] == [True] * 4 + [False] * 6
    assert mask.sum(1).tolist() == [4, 7, 2]
    with torch.no_grad():
        short, _ = enc(tokens[:, :7])  # the same captions with less padding
        alone, _ = enc(tokens[:1])  # and in a batch of their own
        changed = tokens.clone()
        changed[0, 8] = 7  # a different id in a padded position
        padded, _ = enc(changed)
    assert torch.allclose(short[0, :4], states[0, :4], atol=1e-5)
    assert torch.allclose(alone[0, :4], states[0, :4], atol=1e-5)
    assert torch.allclose(padded[0, :4], states[0, :4], atol=1e-5)
    # bidirectional: an early state depends on a later word (GLIDE's text transformer has no causal mask)
    later = tokens.clone()
    later[0, 2] = 9
    with torch.no_grad():
        moved, _ = enc(later)
    assert not torch.allclose(moved[0, 1], states[0, 1], atol=1e-4)


def test_bad_tokens_are_refused_by_value():
    enc = CaptionEncoder(ENCODER)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\), got 48..50"):
        enc(torch.tensor([[48, 50, 49]]))
    with pytest.raises(ValueError, match="12 tokens exceed the caption encoder's context of 10"):
        enc(torch.zeros(1, 12, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        enc(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="16 wide but unet.text_width is 12"):
        DecoderConfig(unet=UNET.with_(text_width=12), caption_encoder=ENCODER)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        CaptionEncoderConfig(width=16, heads=3)


def test_the_decoder_loss_trains_its_caption_encoder_and_kinds_of_input_stay_apart():
    decoder = _decoder().train()
    tokens, z = _tokens(), torch.randn(3, 8)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    loss = decoder.loss(images=images, image_embedding=z, tokens=tokens, generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in decoder.caption_encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="pass tokens, not text_states"):
        decoder.loss(images=images, image_embedding=z, text_states=torch.zeros(3, 10, 16))
    clip_reader = Decoder(DecoderConfig(unet=UNET, diffusion=V))
    with pytest.raises(ValueError, match="not token ids"):
        clip_reader.sample(image_embedding=z, tokens=tokens, steps=1)


def test_captions_steer_sampling_and_files_round_trip(tmp_path):
    decoder = _decoder()
    z, tokens = torch.randn(3, 8), _tokens()
    draw = lambda d, tok: d.sample(image_embedding=z, tokens=tok, steps=2, guidance_scale=3.0,
                                   generator=torch.Generator().manual_seed(1))
    a = draw(decoder, tokens)
    other = tokens.clone()
    other[0, 1] = 11
    b = draw(decoder, other)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:], atol=1e-6)  # rows are independent
    save_decoder(tmp_path / "d", decoder)
    loaded = load_decoder(tmp_path / "d")
    assert loaded.config == decoder.config and torch.equal(draw(loaded, tokens), a)
    record = json.loads((tmp_path / "d" / "decoder_config.json").read_text())
    assert record["config"]["caption_encoder"]["width"] == 16
    plain = DecoderConfig(unet=UNET, diffusion=V)
    assert "caption_encoder" not in plain.to_dict()  # runs begun before the option resume unchanged
    assert DecoderConfig.from_dict(plain.to_dict()) == plain


def test_a_pipeline_reads_captions_through_the_decoders_encoder(tmp_path):
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    clip = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1, embed_dim=8))
    clip.tokenizer = tokenizer
    encoder = ENCODER.with_(vocab_size=tokenizer.vocab_size, context_length=clip.config.context_length)
    decoder = _decoder(encoder=encoder)
    fast = PipelineConfig(prior_kind="text-embedding", decoder=StageSampling(steps=2, guidance_scale=2.0))
    pipe = UnCLIP(clip=clip, decoder=decoder, config=fast)
    inputs = decoder.caption_inputs(pipe.tokens(["a red circle"]), clip=clip)
    assert list(inputs) == ["tokens"]
    z_i, caption = decoder_conditioning(decoder, clip, torch.zeros(1, 3, 32, 32), ["a red circle"])
    assert z_i.shape == (1, 8) and torch.equal(caption["tokens"], inputs["tokens"])
    images = pipe(["a red circle", "a blue square on the left"], seed=2, upsample=False)
    assert [im.size for im in images] == [(16, 16)] * 2
    pipe.save_pretrained(tmp_path / "p")
    again = UnCLIP.from_pretrained(tmp_path / "p")(["a red circle", "a blue square on the left"], seed=2,
                                                   upsample=False)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in images]
    small = Decoder(decoder.config.with_(caption_encoder=encoder.with_(vocab_size=100)))
    with pytest.raises(ValueError, match="reads 100 token ids"):
        UnCLIP(clip=clip, decoder=small, config=fast)
