"""CLIP: the architecture, parity with a reference forward pass on OpenAI-layout weights, zero-shot, training."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from unclip.clip import (
    CLIP, CLIPConfig, classifier_weights, classify, classify_marginal, contrastive_loss, load_clip,
    load_openai_state_dict, load_pretrained, marginal_class_scores, preset, recall_at_k, save_clip,
)
from unclip.clip.weights import config_from_openai
from unclip.tokenizer import Tokenizer
from unclip.world import sample_scene

TINY = CLIPConfig(embed_dim=16, image_size=16, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2,
                  context_length=12, vocab_size=600, text_width=32, text_layers=2, text_heads=2)


def _openai_state_dict(width=64, layers=2, embed=32, patch=8, grid=2, text_width=64, vocab=600, ctx=12, seed=0):
    """Random tensors named and shaped as in OpenAI's CLIP state dict (heads = width / 64, as OpenAI's)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.05  # noqa: E731
    sd = {"visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
          "visual.positional_embedding": r(grid * grid + 1, width), "visual.proj": r(width, embed),
          "token_embedding.weight": r(vocab, text_width), "positional_embedding": r(ctx, text_width),
          "text_projection": r(text_width, embed), "logit_scale": torch.tensor(math.log(1 / 0.07)),
          "input_resolution": torch.tensor(patch * grid), "context_length": torch.tensor(ctx),
          "vocab_size": torch.tensor(vocab)}
    for name, w in (("visual.ln_pre", width), ("visual.ln_post", width), ("ln_final", text_width)):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1 + r(w), r(w)
    for prefix, w in (("visual.transformer", width), ("transformer", text_width)):
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}"
            sd |= {f"{b}.attn.in_proj_weight": r(3 * w, w), f"{b}.attn.in_proj_bias": r(3 * w),
                   f"{b}.attn.out_proj.weight": r(w, w), f"{b}.attn.out_proj.bias": r(w),
                   f"{b}.ln_1.weight": 1 + r(w), f"{b}.ln_1.bias": r(w), f"{b}.ln_2.weight": 1 + r(w),
                   f"{b}.ln_2.bias": r(w), f"{b}.mlp.c_fc.weight": r(4 * w, w), f"{b}.mlp.c_fc.bias": r(4 * w),
                   f"{b}.mlp.c_proj.weight": r(w, 4 * w), f"{b}.mlp.c_proj.bias": r(w)}
    sd["attn_mask"] = torch.full((ctx, ctx), float("-inf")).triu(1)
    return sd


def _reference_transformer(sd, prefix, x, heads, causal):
    """OpenAI's residual attention blocks written out with explicit softmax attention and QuickGELU."""
    layers = len({k.split(".")[len(prefix.split("."))] for k in sd if k.startswith(prefix + ".")})
    n = x.shape[1]
    mask = torch.full((n, n), float("-inf")).triu(1) if causal else torch.zeros(n, n)
    for i in range(layers):
        p = lambda name: sd[f"{prefix}.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, x.shape[-1:], p("ln_1.weight"), p("ln_1.bias"))
        q, k, v = (h @ p("attn.in_proj_weight").t() + p("attn.in_proj_bias")).chunk(3, dim=-1)
        split = lambda t: t.reshape(t.shape[0], n, heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask, dim=-1)
        out = (att @ v).transpose(1, 2).reshape(x.shape)
        x = x + out @ p("attn.out_proj.weight").t() + p("attn.out_proj.bias")
        h = F.layer_norm(x, x.shape[-1:], p("ln_2.weight"), p("ln_2.bias"))
        h = h @ p("mlp.c_fc.weight").t() + p("mlp.c_fc.bias")
        x = x + (h * torch.sigmoid(1.702 * h)) @ p("mlp.c_proj.weight").t() + p("mlp.c_proj.bias")
    return x


def _reference_clip(sd, images01, tokens):
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = F.conv2d((images01 - mean) / std, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], 1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    x = _reference_transformer(sd, "visual.transformer.resblocks", x, x.shape[-1] // 64, causal=False)
    image = F.layer_norm(x[:, 0], x.shape[-1:], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"]) @ sd[
        "visual.proj"]
    t = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    t = _reference_transformer(sd, "transformer.resblocks", t, t.shape[-1] // 64, causal=True)
    t = F.layer_norm(t, t.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"])
    text = t[torch.arange(len(t)), tokens.argmax(-1)] @ sd["text_projection"]
    return image, text


def test_openai_layout_loads_strictly_and_matches_a_reference_forward(tmp_path):
    sd = _openai_state_dict()
    model = load_openai_state_dict(sd)
    assert model.config == config_from_openai(sd) and model.config.image_size == 16
    g = torch.Generator().manual_seed(1)
    images01 = torch.rand(3, 3, 16, 16, generator=g)
    tokens = torch.randint(1, 500, (3, 12), generator=g)
    tokens[:, 7] = 599  # EOT: the largest id
    ref_image, ref_text = _reference_clip(sd, images01, tokens)
    with torch.no_grad():
        assert torch.allclose(model.encode_image_pixels(images01 * 2 - 1), ref_image, atol=1e-5)
        assert torch.allclose(model.encode_text_tokens(tokens), ref_text, atol=1e-5)
    # The same dict from a safetensors file, with open_clip's DDP prefix, loads too; a pickle does not.
    save_file({"module." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    again = load_pretrained(tmp_path / "w.safetensors")
    assert torch.equal(again.visual.proj, model.visual.proj)
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="pickle"):
        load_pretrained(tmp_path / "w.pt")
    broken = dict(sd)
    broken.pop("visual.proj")
    broken["visual.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['visual.proj'\].*unexpected \['visual.extra'\]"):
        load_openai_state_dict(broken)


def test_text_encoder_is_causal_and_reads_the_end_token():
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    tokens = torch.randint(1, 500, (2, 12))
    tokens[:, 5] = 599
    changed = tokens.clone()
    changed[:, 6:] = torch.randint(1, 500, (2, 6))  # after EOT: must not matter
    with torch.no_grad():
        assert torch.allclose(model.encode_text_tokens(tokens), model.encode_text_tokens(changed), atol=1e-6)
        changed[:, 2] = (tokens[:, 2] + 1) % 500  # before EOT: must matter
        assert not torch.allclose(model.encode_text_tokens(tokens), model.encode_text_tokens(changed), atol=1e-4)


def test_length_buckets_give_the_full_width_features_in_input_order():
    torch.manual_seed(0)
    model = CLIP(TINY)
    lengths = torch.randint(2, 13, (100,))  # SOT .. EOT spans of every length, shuffled
    tokens = torch.randint(1, 500, (100, 12)) * (torch.arange(12) < lengths[:, None])
    tokens[torch.arange(100), lengths - 1] = 599  # EOT, the largest id
    full = model.encode_text_tokens(tokens, length_buckets=1)
    grad_full = torch.autograd.grad(full.square().sum(), model.transformer.parameters())
    for buckets in (2, 3, 8):
        cut = model.encode_text_tokens(tokens, length_buckets=buckets)
        assert torch.allclose(cut, full, atol=1e-5), buckets
        grad_cut = torch.autograd.grad(cut.square().sum(), model.transformer.parameters())
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grad_cut, grad_full)), buckets
    assert model.encode_text_tokens(tokens[:0]).shape == (0, TINY.embed_dim)


def test_contrastive_loss_known_values():
    e = torch.eye(4, dtype=torch.float64)
    scale = torch.tensor(10.0, dtype=torch.float64)
    expected = math.log(1 + 3 * math.exp(-10))  # each row: the match scores 10, three others 0
    assert float(contrastive_loss(e, e, scale)) == pytest.approx(expected, rel=1e-5)
    hard = e[:2]  # two extra captions identical to captions 0 and 1: images 0 and 1 now tie twice
    with_negatives = contrastive_loss(e, e, scale, extra_text=hard)
    # image -> text over 6 captions: images 0, 1 score 10 twice and 0 four times; images 2, 3 once and five times
    image_to_text = (2 * math.log(2 + 4 * math.exp(-10)) + 2 * math.log(1 + 5 * math.exp(-10))) / 4
    assert float(with_negatives) == pytest.approx((image_to_text + expected) / 2, rel=1e-5)


def test_public_api_normalises_and_round_trips(tmp_path):
    torch.manual_seed(0)
    captions = [sample_scene("train", i).caption for i in range(500)]
    model = CLIP(TINY)
    model.tokenizer = Tokenizer.train(captions, vocab_size=600, context_length=12)
    images = [__import__("unclip.world", fromlist=["render"]).render(sample_scene("test", i), 40) for i in range(3)]
    z_i, z_t = model.encode_image(images), model.encode_text(captions[:3])
    assert z_i.shape == z_t.shape == (3, 16)
    assert torch.allclose(z_i.norm(dim=-1), torch.ones(3)) and torch.allclose(z_t.norm(dim=-1), torch.ones(3))
    save_clip(tmp_path / "clip", model)
    loaded = load_clip(tmp_path / "clip")
    assert torch.allclose(loaded.encode_text(captions[:3]), z_t, atol=1e-6)
    assert json.loads((tmp_path / "clip" / "clip_config.json").read_text())["embed_dim"] == 16
    assert recall_at_k(z_i, z_i, k=1) == 1.0
    weights = classifier_weights(model, ["red circle", "blue square"])
    assert weights.shape == (2, 16) and classify(model, model.preprocess(images), weights).shape == (3,)
    prompts = [["a red circle", "a blue circle"], ["a red square", "a blue square"]]
    assert classify_marginal(model, model.preprocess(images), prompts).shape == (3,)
    with pytest.raises(ValueError, match=r"same number of context prompts, got \[1, 2\]"):
        classify_marginal(model, model.preprocess(images), [["a red circle"], ["a red square", "a blue square"]])


def test_marginal_scores_sum_over_contexts_where_averaging_is_outvoted():
    # Class 0's prompt in context 0 is the image itself; its other prompt points the opposite way, so its averaged
    # embedding is zero. Class 1's two prompts both lean part way towards the image (cos 0.6): averaging picks
    # class 1, but the class that holds the matching compound prompt carries the probability mass.
    e = torch.eye(4)
    image = e[:1]
    lean = lambda k: F.normalize(e[0] + 1.33 * e[k], dim=0)  # noqa: E731
    weights = torch.stack([torch.stack([e[0], -e[0]]), torch.stack([lean(1), lean(2)])])
    averaged = F.normalize(weights.mean(1), dim=-1)
    assert (image @ averaged.t()).argmax().item() == 1
    scores = marginal_class_scores(image, weights, logit_scale=20.0)
    assert scores.argmax().item() == 0
    # known answer: log of the summed softmax over the four compound logits
    logits = 20.0 * (image @ weights.flatten(0, 1).t())[0]
    p = logits.softmax(0)
    assert torch.allclose(scores[0].exp(), torch.stack([p[:2].sum(), p[2:].sum()]), atol=1e-6)
    with pytest.raises(ValueError, match=r"weights \(C, K, E\)"):
        marginal_class_scores(image, weights[0], logit_scale=20.0)


def test_real_presets_have_openai_shapes():
    # Known shapes of OpenAI's released checkpoints (built on the meta device: no memory, no time).
    expected = {
        "vit-b-32": {"visual.conv1.weight": (768, 3, 32, 32), "visual.positional_embedding": (50, 768),
                     "visual.proj": (768, 512), "text_projection": (512, 512), "positional_embedding": (77, 512),
                     "token_embedding.weight": (49408, 512)},
        "vit-b-16": {"visual.conv1.weight": (768, 3, 16, 16), "visual.positional_embedding": (197, 768)},
        "vit-l-14": {"visual.conv1.weight": (1024, 3, 14, 14), "visual.positional_embedding": (257, 1024),
                     "visual.proj": (1024, 768), "text_projection": (768, 768)},
    }
    from unclip.clip import preset
    for name, shapes in expected.items():
        with torch.device("meta"):
            sd = CLIP(preset(name)).state_dict()
        for key, shape in shapes.items():
            assert tuple(sd[key].shape) == shape, (name, key)
        assert config_from_openai(sd) == preset(name)  # and the shapes read back as the same preset


def test_sincos_position_table_encodes_row_and_column():
    from unclip.clip.model import sincos_2d
    grid, width = 3, 8
    table = sincos_2d(grid=grid, width=width)  # (9, 8): [sin row, cos row, sin col, cos col] at 2 frequencies
    omega = torch.tensor([1.0, 1 / 100])
    for index in range(grid * grid):
        row, col = divmod(index, grid)
        expected = torch.cat([torch.sin(row * omega), torch.cos(row * omega), torch.sin(col * omega),
                              torch.cos(col * omega)])
        torch.testing.assert_close(table[index], expected)
    assert len({tuple(r.tolist()) for r in table}) == grid * grid  # every patch has its own code
    model = CLIP(TINY.with_(vision_position_init="sincos"))
    torch.testing.assert_close(model.visual.positional_embedding[1:], sincos_2d(grid=4, width=32))
    assert model.visual.positional_embedding[0].abs().sum() == 0 and model.visual.positional_embedding.requires_grad
    with pytest.raises(ValueError, match="'learned'"):
        TINY.with_(vision_position_init="learned")
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(grid=2, width=6)


def test_conv_stem_makes_the_patch_grid_and_round_trips_its_batch_norm(tmp_path):
    from unclip.clip.model import ConvStem
    torch.manual_seed(0)
    for patch, image in ((4, 16), (8, 32)):
        stem = ConvStem(width=32, patch_size=patch)
        strides = [m.stride[0] for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
        assert strides.count(2) == int(math.log2(patch)) and stem(torch.randn(2, 3, image, image)).shape == (
            2, 32, image // patch, image // patch)
    config = TINY.with_(vision_stem="conv")
    model = CLIP(config)
    assert not hasattr(model.visual, "conv1")
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    model.train()
    for _ in range(3):  # training updates the running statistics, which then must travel with the weights
        model.encode_image_pixels(images)
    model.eval()
    with torch.no_grad():
        batch = model.encode_image_pixels(images)
        single = torch.cat([model.encode_image_pixels(images[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)  # eval mode: no batch statistics
    save_clip(tmp_path / "clip", model)
    loaded = load_clip(tmp_path / "clip")
    assert loaded.config.vision_stem == "conv"
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image_pixels(images), batch)
    with pytest.raises(ValueError, match="'resnet'"):
        TINY.with_(vision_stem="resnet")
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        TINY.with_(vision_stem="conv", image_size=18, patch_size=6)


def test_shipped_evaluation_encoder_is_the_eval_preset_and_not_the_pipelines_clip():
    """models/eval-clip (what `unclip eval --eval-encoder` reads) is `unclip train clip --preset eval`'s model: that
    preset's architecture with its tokenizer, stored in float16 but loaded as float32, and never the CLIP the shipped
    pipeline is conditioned on."""
    models = Path(__file__).resolve().parents[1] / "models"
    encoder = load_clip(models / "eval-clip")
    assert encoder.config == preset("eval").with_(vocab_size=encoder.tokenizer.vocab_size)
    with safe_open(str(models / "eval-clip" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    captions = ["a red circle", "two small blue squares on a black background"]
    text = encoder.encode_text(captions)
    assert text.shape == (2, encoder.config.embed_dim) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(text[0], text[1], atol=1e-3)
    pipeline_clip = load_clip(models / "shapes-tiny" / "clip")
    assert pipeline_clip.config != encoder.config
