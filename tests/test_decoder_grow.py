"""Growing a trained UNet wider (grow.py): the grown one computes what the small one did, and can then learn."""

import pytest
import torch

from unclip.decoder import UNetConfig
from unclip.decoder.grow import grow_unet
from unclip.decoder.unet import UNet

from perturb import perturb

SMALL = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=16,
                   attention_resolutions=(16, 8), clip_dim=8, text_width=12)


def _trained_looking(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A seeded UNet whose zero-initialised output layers are made non-zero, as training makes them."""
    torch.manual_seed(seed)
    return perturb(UNet(cfg)).eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0, 500, 999]),
            dict(image_embedding=torch.randn(3, 8, generator=g), text_states=torch.randn(3, 5, 12, generator=g),
                 text_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])))


@pytest.mark.parametrize("mult, mlp", [((1, 3), None), ((2, 3), 32), ((1, 2), 32)])
def test_a_grown_unet_computes_what_the_small_one_did(mult, mlp):
    small = _trained_looking(SMALL)
    torch.manual_seed(5)
    big = grow_unet(UNet(SMALL.with_(channel_mult=mult, image_mlp_width=mlp)), small)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    x, t, cond = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(big(x, t, **cond), small(x, t, **cond), rtol=0, atol=1e-5)
        # the new channels are live (they carry the wider UNet's own initial weights), only unread by the old ones
        if mult[1] > 2:
            assert big.encoder[1][0].res.in_conv.weight[32:].abs().sum() > 0


def test_a_grown_unet_learns_through_its_new_channels():
    small = _trained_looking(SMALL)
    big = grow_unet(UNet(SMALL.with_(channel_mult=(1, 3))), small)
    x, t, cond = _inputs()
    before = big(x, t, **cond).detach()
    big(x, t, **cond).square().mean().backward()
    # the level-1 block's output convolution: the weights from new channels into old ones start at zero and get
    # a gradient, so one step makes the new channels matter
    conv = big.decoder[0][0].res.out_conv.weight  # (48, 48, 3, 3): rows and columns 32.. are the new channels
    assert torch.equal(conv[:32, 32:].detach(), torch.zeros_like(conv[:32, 32:]))
    assert conv.grad[:32, 32:].abs().sum() > 0
    with torch.no_grad():
        for p in big.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad)
    assert not torch.allclose(big(x, t, **cond), before)


def test_growth_that_would_change_the_function_is_refused():
    small = _trained_looking(SMALL)
    # level 1's first block reads 16 channels and writes 32 through a 1x1 skip; at (2, 2) that skip is an identity
    with pytest.raises(ValueError, match="cannot grow a 1x1 skip into an identity"):
        grow_unet(UNet(SMALL.with_(channel_mult=(2, 2))), small)
    with pytest.raises(ValueError, match=r"channel_mult \(1, 2\) into one with \(1, 1\).*only channel multipliers"):
        grow_unet(UNet(SMALL.with_(channel_mult=(1, 1))), small)
    with pytest.raises(ValueError, match=r"differ in \['head_channels'\]"):
        grow_unet(UNet(SMALL.with_(channel_mult=(1, 2), head_channels=8)), small)
    # 64 -> 128 channels at level 1: the decoder block there reads 256 channels, whose GroupNorm (at most 32 groups)
    # has groups of 8 where the small one's had 4, which would mix old and new channels
    wide = SMALL.with_(model_channels=32)
    with pytest.raises(ValueError, match=r"groups of 4 vs 8"):
        grow_unet(UNet(wide.with_(channel_mult=(1, 4))), _trained_looking(wide))


def test_a_fixed_group_size_lets_growth_pass_adms_32_groups():
    # the same growth as the refused one above, with GroupNorm groups fixed at 4 channels: the 256-channel decoder
    # block gets 64 groups instead of ADM's 32, so no group mixes old and new channels and nothing changes
    wide = SMALL.with_(model_channels=32)
    small = _trained_looking(wide)
    torch.manual_seed(5)
    big = grow_unet(UNet(wide.with_(channel_mult=(1, 4), norm_group_size=4)), small)
    assert big.decoder[0][0].res.in_norm.num_groups == 64 and small.decoder[0][0].res.in_norm.num_groups == 32
    x, t, cond = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(big(x, t, **cond), small(x, t, **cond), rtol=0, atol=1e-5)
    # a group size the small UNet did not have is refused, naming both sizes
    with pytest.raises(ValueError, match=r"groups of 4 vs 8"):
        grow_unet(UNet(wide.with_(channel_mult=(1, 4), norm_group_size=8)), small)


def test_norm_group_size_must_divide_every_width():
    assert UNet(SMALL.with_(norm_group_size=8)).out_norm.num_groups == 2  # 16 channels in groups of 8
    with pytest.raises(ValueError, match=r"norm_group_size 3 does not divide the UNet's widths \[16, 32\]"):
        SMALL.with_(norm_group_size=3)
    with pytest.raises(ValueError, match=r"norm_group_size must be None or a positive integer, got 0"):
        SMALL.with_(norm_group_size=0)


def test_the_wider_tenth_cycle_grows_from_the_shipped_decoders_config():
    from unclip.decoder import train as decoder_train
    recipes = decoder_train.RECIPES
    shipped, wider = (recipes[n].model.unet.with_(image_size=16) for n in (
        "tiny-16-rb1-sc-focus7-cap20-wide-ft9", "tiny-16-rb1-sc-focus7-cap20-wider-ft10"))
    small = _trained_looking(shipped)
    big = grow_unet(UNet(wider), small)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([100, 900])
    cond = dict(image_embedding=torch.randn(2, 64, generator=g), text_states=torch.randn(2, 7, 128, generator=g),
                self_cond=torch.randn(2, 3, 16, 16, generator=g))
    with torch.no_grad():
        torch.testing.assert_close(big(x, t, **cond), small(x, t, **cond), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-16-rb1-mlp-ft4", "tiny-16-rb1-wide-ft4"])
def test_the_grown_recipes_grow_from_the_shipped_decoders_recipe_and_train_like_its_fifth_cycle(name):
    from unclip.decoder import train as decoder_train
    recipes = decoder_train.RECIPES
    assert recipes[name].train == recipes["tiny-16-rb1-ft4"].train  # same steps and scenes: they read against it
    small = _trained_looking(recipes["tiny-16-rb1"].model.unet.with_(image_size=16))
    big = grow_unet(UNet(recipes[name].model.unet.with_(image_size=16)), small)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([100, 900])
    cond = dict(image_embedding=torch.randn(2, 64, generator=g), text_states=torch.randn(2, 7, 128, generator=g))
    with torch.no_grad():
        torch.testing.assert_close(big(x, t, **cond), small(x, t, **cond), rtol=0, atol=1e-5)
