"""The autoregressive prior (unCLIP §2.2): z_i as a sequence of discrete codes, predicted by a causal transformer.

z_i is reduced by PCA to its top components (fitted on training embeddings), each component quantised
into 1024 buckets, and the codes predicted in order of decreasing variance by a decoder-only
transformer conditioned on the caption: the sequence is [CLIP's text states, z_t, a token for the
quantised similarity z_i . z_t, code_1 ... code_K]. The similarity token is the true one in training;
at sampling it is set high, which the paper found gives better samples. The caption is dropped 10% of
the time, so sampling can use classifier-free guidance on the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import dropout_mask
from ..nn.transformer import Transformer
from ..samplers.common import Generators, per_row
from .config import ARPriorConfig
from .masks import causal_prefix_mask
from .pca import PCA
from .quantize import Quantizer


class ARPrior(nn.Module):
    def __init__(self, cfg: ARPriorConfig):
        super().__init__()
        if cfg.components is None:
            raise ValueError("ARPriorConfig.components is unset: build a new prior with ARPrior.from_embeddings")
        self.config = cfg
        k, w = cfg.components, cfg.width
        self.pca = PCA(cfg.embed_dim, k)
        self.quantizer = Quantizer(k, cfg.buckets)
        self.similarity = Quantizer(1, cfg.similarity_buckets)
        self.register_buffer("similarity_quantiles", torch.linspace(-1, 1, 101))  # of training z_i . z_t
        self.text_in = nn.Linear(cfg.text_width, w)
        self.text_embed_in = nn.Linear(cfg.embed_dim, w)
        self.null_text = nn.Parameter(0.02 * torch.randn(cfg.context_length, w))
        self.null_text_embed = nn.Parameter(0.02 * torch.randn(w))
        self.similarity_embedding = nn.Embedding(cfg.similarity_buckets, w)
        self.code_embedding = nn.Embedding(cfg.buckets, w)  # shared by all components; position tells them apart
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length + 1 + k, w))
        self.transformer = Transformer(w, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(w)
        self.head = nn.Linear(w, cfg.buckets)
        nn.init.normal_(self.code_embedding.weight, std=0.02)
        nn.init.normal_(self.similarity_embedding.weight, std=0.02)

    @staticmethod
    def from_embeddings(cfg: ARPriorConfig, *, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> ARPrior:
        """A new prior whose PCA and quantisers are fitted on training (N, E) z_i and their captions' z_t."""
        pca = PCA.fit(image_embedding, variance_kept=cfg.pca_variance, max_components=cfg.max_components)
        prior = ARPrior(cfg.with_(components=pca.num_components))
        prior.pca.load_state_dict(pca.state_dict())
        prior.quantizer.load_state_dict(Quantizer.fit(pca.transform(image_embedding), buckets=cfg.buckets).state_dict())
        sims = (image_embedding * text_embedding).sum(-1, keepdim=True)  # (N, 1)
        prior.similarity.load_state_dict(Quantizer.fit(sims, buckets=cfg.similarity_buckets).state_dict())
        levels = torch.linspace(0, 1, 101, dtype=torch.float64)
        prior.similarity_quantiles.copy_(torch.quantile(sims[:, 0].double(), levels).float())
        return prior

    # ----- codes <-> embeddings ---------------------------------------------------------------------------
    def encode(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """(B, E) z_i -> (B, K) codes."""
        return self.quantizer.encode(self.pca.transform(image_embedding))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K) codes -> (B, E) unit-norm z_i."""
        return F.normalize(self.pca.inverse(self.quantizer.decode(codes)), dim=-1)

    # ----- network ----------------------------------------------------------------------------------------
    def logits(self, codes: torch.Tensor, *, similarity: torch.Tensor, text_embedding: torch.Tensor,
               text_states: torch.Tensor, text_mask: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Next-code logits (B, n + 1, buckets) for a prefix of n codes (B, n), 0 <= n < K.

        Output j predicts code j + 1 from the caption, the similarity token and codes 1..j.
        similarity (B,) bucket indices; keep (B,) bool, False where the caption is dropped.
        """
        b, n = codes.shape
        text = self.text_in(text_states)  # (B, T, W)
        z_t = self.text_embed_in(text_embedding)  # (B, W)
        if keep is not None:
            text = torch.where(keep[:, None, None], text, self.null_text.to(text.dtype).expand_as(text))
            z_t = torch.where(keep[:, None], z_t, self.null_text_embed.to(z_t.dtype).expand_as(z_t))
            first_only = torch.zeros_like(text_mask)
            first_only[:, 0] = True
            text_mask = torch.where(keep[:, None], text_mask, first_only)
        seq = torch.cat([text, z_t[:, None], self.similarity_embedding(similarity)[:, None],
                         self.code_embedding(codes)], dim=1)  # (B, T + 2 + n, W)
        seq = seq + self.positional_embedding[: seq.shape[1]]
        h = self.transformer(seq, mask=causal_prefix_mask(text_mask, 2 + n))
        return self.head(self.ln_final(h[:, -(n + 1):]))  # (B, n + 1, buckets)

    def loss(self, *, image_embedding: torch.Tensor, text_embedding: torch.Tensor, text_states: torch.Tensor,
             text_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean cross-entropy of the true codes (teacher forcing), in nats per code."""
        codes = self.encode(image_embedding)  # (B, K)
        sims = (image_embedding * text_embedding).sum(-1, keepdim=True)
        similarity = self.similarity.encode(sims)[:, 0]  # (B,)
        keep = ~dropout_mask(len(codes), self.config.cond_drop_prob, generator=generator, device=codes.device)
        logits = self.logits(codes[:, :-1], similarity=similarity, text_embedding=text_embedding,
                             text_states=text_states, text_mask=text_mask, keep=keep)  # (B, K, buckets)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))

    @torch.no_grad()
    def sample(self, *, text_embedding: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
               temperature: float = 1.0, top_k: int | None = None, guidance_scale: float = 1.0,
               similarity_quantile: float = 0.9, generator: Generators = None) -> torch.Tensor:
        """(B, E) unit-norm image embeddings, codes drawn one at a time; `generator` may be one per caption, each
        caption's codes then drawn from its own (samplers.common).

        The similarity token is the bucket of the training similarities' `similarity_quantile` (the paper
        conditions on a high z_i . z_t). Guidance mixes the log-probabilities, uncond + s (cond - uncond);
        then temperature and top-k apply.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.config.buckets:
            raise ValueError(f"top_k must be in [1, {self.config.buckets}], got {top_k}")
        if not 0 <= similarity_quantile <= 1:
            raise ValueError(f"similarity_quantile must be in [0, 1], got {similarity_quantile}")
        b, device = len(text_embedding), text_embedding.device
        rows = per_row(generator, b) if isinstance(generator, (list, tuple)) else None
        level = torch.quantile(self.similarity_quantiles.double(), similarity_quantile).float().reshape(1, 1)
        similarity = self.similarity.encode(level.to(device)).reshape(1).expand(b)
        guided = guidance_scale != 1
        cond = dict(similarity=similarity, text_embedding=text_embedding, text_states=text_states, text_mask=text_mask)
        if guided:  # one batch of 2B: conditional rows, then unconditional ones
            cond = {k: torch.cat([v, v]) for k, v in cond.items()}
            cond["keep"] = torch.arange(2 * b, device=device) < b
        codes = torch.zeros(b, 0, dtype=torch.long, device=device)
        for _ in range(self.config.components):
            logits = self.logits(torch.cat([codes, codes]) if guided else codes, **cond)[:, -1].float()  # (B', V)
            logp = logits.log_softmax(-1)
            if guided:
                c, u = logp.chunk(2)
                logp = u + guidance_scale * (c - u)
            logp = logp / temperature
            if top_k is not None:
                kth = logp.topk(top_k, dim=-1).values[:, -1:]
                logp = logp.masked_fill(logp < kth, float("-inf"))
            probs = logp.softmax(-1)
            nxt = (torch.multinomial(probs, 1, generator=generator) if rows is None else torch.cat(
                [torch.multinomial(probs[r:r + 1], 1, generator=g) for r, g in enumerate(rows)]))  # (B, 1)
            codes = torch.cat([codes, nxt], dim=1)
        return self.decode(codes)
