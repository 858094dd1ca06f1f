"""Caption -> z_i by any of the paper's four routes, under one call (unCLIP §2.2 and its Table 2 / §5 ablation).

    diffusion        the diffusion prior
    ar               the autoregressive prior
    text-embedding   no prior: z_t itself is handed to the decoder as if it were z_i
    none             no prior and no z_i: the decoder works from the caption alone (returns None)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..clip import CLIP
from ..samplers.common import Generators
from .autoregressive import ARPrior
from .diffusion import DiffusionPrior
from .embed import text_conditioning

PRIOR_KINDS = ("diffusion", "ar", "text-embedding", "none")


@torch.no_grad()
def image_embeddings(kind: str, *, clip: CLIP, captions: Sequence[str], prior: DiffusionPrior | ARPrior | None = None,
                     generator: Generators = None, **sample_options) -> torch.Tensor | None:
    """(B, E) unit-norm z_i for B captions (None for kind "none"); `sample_options` go to the prior's sample()."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior kind {kind!r}: expected one of {', '.join(PRIOR_KINDS)}")
    if kind == "none":
        return None
    device = clip.logit_scale.device
    tokens = clip.tokenizer(list(captions)).to(device)
    z_t = F.normalize(clip.encode_text_tokens(tokens), dim=-1)
    if kind == "text-embedding":
        return z_t
    want = DiffusionPrior if kind == "diffusion" else ARPrior
    if not isinstance(prior, want):
        raise ValueError(f"prior kind {kind!r} needs a {want.__name__}, got {type(prior).__name__}")
    states, mask = text_conditioning(clip, tokens)
    if isinstance(prior, DiffusionPrior):
        sample_options = sample_options | {"text_tokens": tokens}
    return prior.sample(text_embedding=z_t, text_states=states, text_mask=mask, generator=generator, **sample_options)
