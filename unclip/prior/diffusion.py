"""The diffusion prior (unCLIP §2.2): a decoder-only transformer that denoises CLIP image embeddings.

The sequence is, in order: the encoded caption (CLIP's per-token text states), the CLIP text embedding
z_t, an embedding of the diffusion timestep, the noised image embedding, and a final learned query
whose output predicts the unnoised z_i directly (x0-prediction, trained with MSE). A causal mask runs
over the whole sequence. Classifier-free guidance: the text conditioning (tokens and z_t) is replaced
by learned null embeddings 10% of the time in training. At sampling, `best_of` candidates are drawn per
caption and the one with the highest z_i . z_t is kept (the paper draws two).

The network sees timesteps as numbers only; the schedule lives in diffusion/, the samplers in samplers/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import GaussianDiffusion, classifier_free_guidance, dropout_mask
from ..nn.embedding import timestep_embedding
from ..nn.transformer import Transformer
from ..samplers import SAMPLERS
from ..samplers.common import Generators, per_row
from .config import DiffusionPriorConfig
from .masks import causal_prefix_mask

EXTRA = 4  # sequence positions after the text: z_t, timestep, noised z_i, query


class PriorTransformer(nn.Module):
    def __init__(self, cfg: DiffusionPriorConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.text_in = nn.Linear(cfg.text_width, w)
        # the prior's own embedding of the token ids (config.token_embedding), zero at first: see the config
        # (unit-normal vectors through a zero-initialised projection: the prior starts out computing what it did
        # without them, yet each token's vector is distinct from the first step, so the gradient can use it)
        self.token_embedding = nn.Embedding(cfg.vocab_size, w) if cfg.token_embedding else None
        self.token_proj = nn.Linear(w, w) if cfg.token_embedding else None
        if self.token_embedding is not None:
            nn.init.normal_(self.token_embedding.weight, std=1.0)
            nn.init.zeros_(self.token_proj.weight)
            nn.init.zeros_(self.token_proj.bias)
        self.text_embed_in = nn.Linear(cfg.embed_dim, w)
        self.x_in = nn.Linear(cfg.embed_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(w, 4 * w), nn.SiLU(), nn.Linear(4 * w, w))
        self.null_text = nn.Parameter(0.02 * torch.randn(cfg.context_length, w))  # replaces dropped captions
        self.null_text_embed = nn.Parameter(0.02 * torch.randn(w))
        self.query = nn.Parameter(0.02 * torch.randn(w))
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length + EXTRA, w))
        self.transformer = Transformer(w, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(w)
        self.out = nn.Linear(w, cfg.embed_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, text_embedding: torch.Tensor,
                text_states: torch.Tensor, text_mask: torch.Tensor, keep: torch.Tensor | None = None,
                text_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the (scaled) z_i from its noised version.

        x_t (B, E) noised scaled embedding; t (B,) timesteps; text_embedding (B, E) z_t; text_states
        (B, T, text_width) CLIP's token states; text_mask (B, T) bool; keep (B,) bool, False where the
        conditioning is dropped (classifier-free guidance's unconditional branch); text_tokens (B, T) the token
        ids those states encode (needed by a prior with its own token embedding, ignored by one without).
        Returns (B, E).
        """
        b, t_len = text_mask.shape
        if t_len != self.config.context_length or text_states.shape[:2] != (b, t_len):
            raise ValueError(f"text states {tuple(text_states.shape)} / mask {tuple(text_mask.shape)} do not match "
                             f"context_length {self.config.context_length}")
        text = self.text_in(text_states)  # (B, T, W)
        if self.token_embedding is not None:
            text = text + self.token_proj(self.token_embedding(self._checked_tokens(text_tokens, text_mask)))
        z_t = self.text_embed_in(text_embedding)  # (B, W)
        if keep is not None:
            k = keep.to(text.device)
            text = torch.where(k[:, None, None], text, self.null_text.to(text.dtype).expand_as(text))
            z_t = torch.where(k[:, None], z_t, self.null_text_embed.to(z_t.dtype).expand_as(z_t))
            first_only = torch.zeros_like(text_mask)
            first_only[:, 0] = True
            text_mask = torch.where(k[:, None], text_mask, first_only)  # a dropped caption has no length
        time = self.time_mlp(timestep_embedding(t, self.config.width).to(text.dtype))  # (B, W)
        tail = torch.stack([z_t, time, self.x_in(x_t), self.query.to(text.dtype).expand(b, -1)], dim=1)  # (B, 4, W)
        seq = torch.cat([text, tail], dim=1) + self.positional_embedding  # (B, T + 4, W)
        h = self.transformer(seq, mask=causal_prefix_mask(text_mask, EXTRA))
        return self.out(self.ln_final(h[:, -1]))  # the query's output: predicted z_i, (B, E)

    def _checked_tokens(self, tokens: torch.Tensor | None, text_mask: torch.Tensor) -> torch.Tensor:
        vocab = self.config.vocab_size
        if tokens is None:
            raise ValueError("this prior embeds the caption's token ids itself (token_embedding): pass text_tokens")
        if tuple(tokens.shape) != tuple(text_mask.shape) or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"text_tokens must be a (B, T) integer tensor matching the mask "
                             f"{tuple(text_mask.shape)}, got {tokens.dtype} {tuple(tokens.shape)}")
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}), got {int(tokens.min())}..{int(tokens.max())}: "
                             f"the prior was built for another tokenizer")
        return tokens


class DiffusionPrior(nn.Module):
    """The network plus its diffusion; `loss` for training, `sample` for z_t -> z_i."""

    def __init__(self, cfg: DiffusionPriorConfig):
        super().__init__()
        self.config = cfg
        self.net = PriorTransformer(cfg)
        self.diffusion = GaussianDiffusion(cfg.diffusion)

    def loss(self, *, image_embedding: torch.Tensor, text_embedding: torch.Tensor, text_states: torch.Tensor,
             text_mask: torch.Tensor, generator: torch.Generator,
             text_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Mean MSE between the predicted and true scaled z_i (unCLIP §2.2: L = E ||f(z_i^(t), t, y) - z_i||^2)."""
        b, device = len(image_embedding), image_embedding.device
        x0 = image_embedding * self.config.scale
        t = self.diffusion.sample_timesteps(b, generator=generator, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        keep = ~dropout_mask(b, self.config.cond_drop_prob, generator=generator, device=device)

        def model_fn(x, tt):
            return self.net(x, tt, text_embedding=text_embedding, text_states=text_states, text_mask=text_mask,
                            keep=keep, text_tokens=text_tokens)

        return self.diffusion.training_losses(model_fn, x0, t, noise)["loss"].mean()

    @torch.no_grad()
    def sample(self, *, text_embedding: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
               steps: int = 64, sampler: str = "ddim", guidance_scale: float = 1.0, best_of: int = 2,
               generator: Generators = None, text_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """(B, E) unit-norm image embeddings for B captions; `generator` may be one per caption (samplers.common).

        Draws `best_of` candidates per caption with `sampler` ("ddim" with eta 0, "ddpm" or "dpm++") over
        `steps` network evaluations (the paper uses 64 strided steps), each guided with `guidance_scale`,
        and keeps the candidate with the highest dot product with z_t (unCLIP §2.2).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {best_of}")
        b, k = len(text_embedding), best_of
        rep = lambda x: x.repeat_interleave(k, dim=0)  # (B*k, ...): candidates of one caption are adjacent
        z_t, states, mask = rep(text_embedding), rep(text_states), rep(text_mask)
        ones = torch.ones(b * k, dtype=torch.bool, device=z_t.device)
        cond = dict(text_embedding=z_t, text_states=states, text_mask=mask, keep=ones)
        if text_tokens is not None:
            cond["text_tokens"] = rep(text_tokens)
        model_fn = classifier_free_guidance(self.net, scale=guidance_scale, cond=cond, uncond=cond | {"keep": ~ones})
        if isinstance(generator, (list, tuple)):  # a caption's candidates draw from its generator in turn
            generator = per_row(generator, b, repeat=k)
        x = SAMPLERS[sampler](model_fn, self.diffusion, (b * k, self.config.embed_dim), steps=steps,
                              generator=generator, device=z_t.device, dtype=z_t.dtype)
        z_i = F.normalize(x / self.config.scale, dim=-1).reshape(b, k, -1)  # (B, k, E)
        best = (z_i @ F.normalize(text_embedding, dim=-1)[:, :, None]).squeeze(-1).argmax(dim=1)  # (B,)
        return z_i[torch.arange(b, device=z_i.device), best]
