"""The caption adapter (caption_encoder.CaptionAdapter): a caption encoder beside the CLIP's token states, grown onto
a trained decoder from zero. Function preservation at --init-from, bidirectional reading of the words, training
through the decoder's loss, files, the pipeline, and the errors that name the bad input."""

import pytest
import torch

from perturb import perturb
from test_caption_encoder import UNET, V, _tokens
from unclip.clip import CLIP, preset
from unclip.clip.train import SHAPES_TOKENIZER
from unclip.decoder import Decoder, DecoderConfig, load_decoder, save_decoder
from unclip.decoder import train as decoder_train
from unclip.decoder.caption_encoder import CaptionAdapter, CaptionEncoderConfig
from unclip.decoder.train import decoder_conditioning
from unclip.pipeline import PipelineConfig, StageSampling, UnCLIP
from unclip.tokenizer import Tokenizer

ADAPTER = CaptionEncoderConfig(vocab_size=50, context_length=10, width=16, layers=1, heads=2)


def _perturbed(module, seed=0):
    return perturb(module, generator=torch.Generator().manual_seed(seed))


def _states(tokens):
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, row in enumerate(tokens.tolist()):
        mask[i, :row.index(49) + 1] = True
    return torch.randn(*tokens.shape, 16, generator=torch.Generator().manual_seed(3)) * mask[..., None], mask


def test_the_adapter_starts_as_no_change_then_reads_later_words():
    torch.manual_seed(0)
    adapter = CaptionAdapter(ADAPTER).eval()
    tokens = _tokens()
    states, mask = _states(tokens)
    with torch.no_grad():
        assert torch.equal(adapter(tokens, states, mask), states)  # the output projection starts at zero
        _perturbed(adapter)
        out = adapter(tokens, states, mask)
        later = tokens.clone()
        later[0, 2] = 9  # a later word changes an earlier position's state: bidirectional, unlike the CLIP's
        moved = adapter(later, states, mask)
        padded = tokens.clone()
        padded[0, 8] = 7  # an id in a padded position changes no real position
        same = adapter(padded, states, mask)
        empty = adapter(torch.zeros(1, 10, dtype=torch.long), torch.zeros(1, 10, 16), torch.zeros(1, 10, dtype=bool))
    assert out.shape == (3, 10, 16) and not torch.allclose(out, states)
    assert not torch.allclose(moved[0, 1], out[0, 1], atol=1e-4)
    assert torch.allclose(same[0, :4], out[0, :4], atol=1e-5)
    assert torch.isfinite(empty).all()  # a caption with no real token (fully masked) does not make NaNs


def test_bad_adapter_input_is_refused_by_value():
    adapter = CaptionAdapter(ADAPTER)
    tokens = _tokens()
    states, mask = _states(tokens)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\), got 0..50"):
        adapter(tokens.masked_fill(tokens == 49, 50), states, mask)
    with pytest.raises(ValueError, match=r"the CLIP states \(3, 9, 16\) and mask \(3, 10\) do not match"):
        adapter(tokens, states[:, :9], mask)
    with pytest.raises(ValueError, match="12 tokens exceed the caption adapter's context of 10"):
        adapter(torch.zeros(1, 12, dtype=torch.long), torch.zeros(1, 12, 16), torch.ones(1, 12, dtype=bool))
    with pytest.raises(ValueError, match="caption adapter is 16 wide but unet.text_width is 12"):
        DecoderConfig(unet=UNET.with_(text_width=12), caption_adapter=ADAPTER)
    with pytest.raises(ValueError, match="not both"):
        DecoderConfig(unet=UNET, caption_encoder=ADAPTER, caption_adapter=ADAPTER)
    decoder = Decoder(DecoderConfig(unet=UNET, diffusion=V, caption_adapter=ADAPTER))
    with pytest.raises(ValueError, match="text_states, text_mask and the tokens they encode"):
        decoder.sample(image_embedding=torch.randn(3, 8), text_states=states, text_mask=mask, steps=1)


def test_init_from_grows_an_adapter_onto_a_saved_decoder_and_training_moves_it(tmp_path):
    torch.manual_seed(0)
    plain = _perturbed(Decoder(DecoderConfig(unet=UNET, diffusion=V)))
    save_decoder(tmp_path / "plain", plain)
    grown = Decoder(plain.config.with_(caption_adapter=ADAPTER))
    decoder_train._load_initial_weights(grown, tmp_path / "plain")
    tokens, z = _tokens(), torch.randn(3, 8)
    states, mask = _states(tokens)
    draw = lambda d, **caption: d.eval().sample(image_embedding=z, **caption, steps=2, guidance_scale=3.0,
                                                generator=torch.Generator().manual_seed(1))
    before = draw(plain, text_states=states, text_mask=mask)
    assert torch.equal(draw(grown, text_states=states, text_mask=mask, tokens=tokens), before)
    grown.train().loss(images=torch.rand(3, 3, 16, 16) * 2 - 1, image_embedding=z, text_states=states,
                       text_mask=mask, tokens=tokens, generator=torch.Generator().manual_seed(0)).backward()
    last = grown.caption_adapter.out_proj.weight
    assert last.grad is not None and last.grad.abs().sum() > 0
    with torch.no_grad():
        last.sub_(0.1 * last.grad / last.grad.norm())
    after = draw(grown, text_states=states, text_mask=mask, tokens=tokens)
    assert not torch.allclose(after, before)
    save_decoder(tmp_path / "grown", grown)
    loaded = load_decoder(tmp_path / "grown")
    assert loaded.config == grown.config
    assert torch.equal(draw(loaded, text_states=states, text_mask=mask, tokens=tokens), after)
    with pytest.raises(ValueError, match="config differs"):  # an adapter can be added, not taken away
        decoder_train._load_initial_weights(plain, tmp_path / "grown")


def test_a_pipeline_hands_the_adapter_states_and_tokens(tmp_path):
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    clip = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=1, embed_dim=8,
                                     text_width=16, text_heads=2))
    clip.tokenizer = tokenizer
    adapter = ADAPTER.with_(vocab_size=tokenizer.vocab_size, context_length=clip.config.context_length)
    decoder = _perturbed(Decoder(DecoderConfig(unet=UNET, diffusion=V, caption_adapter=adapter))).eval()
    fast = PipelineConfig(prior_kind="text-embedding", decoder=StageSampling(steps=2, guidance_scale=2.0))
    pipe = UnCLIP(clip=clip, decoder=decoder, config=fast)
    _, caption = decoder_conditioning(decoder, clip, torch.zeros(1, 3, 32, 32), ["a red circle"])
    assert sorted(caption) == ["text_mask", "text_states", "tokens"]
    images = pipe(["a red circle", "a blue square on the left"], seed=2, upsample=False)
    pipe.save_pretrained(tmp_path / "p")
    again = UnCLIP.from_pretrained(tmp_path / "p")(["a red circle", "a blue square on the left"], seed=2,
                                                   upsample=False)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in images]
    small = Decoder(decoder.config.with_(caption_adapter=adapter.with_(vocab_size=100)))
    with pytest.raises(ValueError, match="caption adapter reads 100 token ids"):
        UnCLIP(clip=clip, decoder=small, config=fast)
