"""UnCLIP: the one place the stages meet. caption -> z_t -> prior -> z_i -> decoder -> 32 px -> upsamplers -> PNG.

    pipe = UnCLIP.from_pretrained("models/shapes-tiny")
    images = pipe(["a red circle above a blue square"], num_images=4, seed=0)     # PIL images, final size
    stages = pipe(["a red circle"], stages=True)      # {"decoder": [...], "upsampler1": [...]}

A pipeline directory holds one subfolder per stage, each loadable on its own (clip/, prior/, ar_prior/,
decoder/, upsampler1/ ...) and pipeline.json with the sampling settings of every stage. Weights may be
stored in float16 (save_pretrained(half=True)); they are loaded back into float32 modules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from .clip import CLIP, load_clip, save_clip
from .data.images import to_pil
from .decoder import Decoder, Upsampler, load_decoder, save_decoder
from .decoder.decoder import guidance_interval_fractions
from .judge import Judge, load_judge, save_judge
from .prior import ARPrior, DiffusionPrior, load_prior, save_prior
from .prior.embed import text_conditioning
from .prior.kinds import PRIOR_KINDS, image_embeddings
from .rerank import clip_scores, judge_scores, pick_best
from .samplers.common import Generators
from .train.checkpoint import write_tensors

FORMAT_VERSION = 1
SAMPLERS = ("ddim", "ddpm", "dpm++")


@dataclass(frozen=True)
class StageSampling:
    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None  # decoder only: guided steps' t / (T - 1); None: all

    def __post_init__(self):
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", guidance_interval_fractions(self.guidance_interval))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class PipelineConfig:
    """How each stage samples. The paper: 64 prior steps, best of 2; a guided decoder; DDIM in 27 steps for the
    first upsampler. Here the defaults keep a 32 px image within 35 network evaluations (issue 8): the prior takes
    8 DPM-Solver++ steps and one sample, since its quality curve is flat from 4 to 64 steps (cos to the true z_i
    0.913 at 4, 0.911 at 64; benchmarks/results/prior.json) and best-of-2, which doubles its cost, pushes
    cos(z_i, z_t) 0.033 above the true image's (one sample: 0.020; LAION's check allows 0.02). The decoder takes
    13 guided DPM-Solver++ steps (26 evaluations): on 200 test captions they scored as 25 guided DDIM steps did
    (50 evaluations), with CLIP score 79.0 vs 79.5 and FD 0.053 vs 0.043 (docs/pipeline.md).

    candidates > 1 draws that many z_i and decoder images per requested image and keeps the one the pipeline's CLIP
    rates closest to the caption (unclip/rerank.py): K times the prior's and the decoder's work, the upsamplers once.
    Off in these defaults, which sample as the paper does; models/shapes-tiny spends its 35 evaluations on two
    candidates of fewer steps each (train_all.py).

    manipulation_steps: the DDIM steps of the manipulations' inversion and decode (unclip/manipulate.py), where
    they should differ from the decoder's (a pipeline that samples with few solver steps still inverts with
    enough); None: the decoder's steps.

    autoguidance: generation guides the decoder by the pipeline's guide decoder (`decoder_guide`, a weaker decoder of
    the same images) instead of classifier-free guidance: guide + s * (decoder - guide), s the decoder's
    guidance_scale (Karras et al. 2024; Decoder.denoiser). The manipulations keep classifier-free guidance, which
    their DDIM inversion retraces.

    distilled: generation samples the pipeline's `decoder_distilled` stage unguided instead of guiding the decoder: a
    network trained to output what the guided decoder outputs on its own sampling steps (decoder/distill.py; Meng et
    al. 2023), so each decoder step costs one evaluation instead of two. The decoder settings above still name the
    sampler and steps, and the guidance it was distilled from; the manipulations keep the decoder itself.

    prior_draws: how many z_i an image's candidates are decoded from (None: one each). Fewer draws than candidates
    decode each z_i several times, candidates / prior_draws each, with different decoder noise: the prior's work is
    paid per draw, so more candidates fit the same evaluations.

    judge: re-rank the candidates by the pipeline's `judge` stage, an image-text matching cross-encoder trained on
    near-miss captions (unclip/judge), instead of by the CLIP's cosine; it reads where things are, which the CLIP's
    text embedding barely does (docs/reranking.md)."""

    prior_kind: str = "diffusion"  # the default route: diffusion | ar | text-embedding | none
    prior: StageSampling = StageSampling(sampler="dpm++", steps=8, guidance_scale=1.0)
    best_of: int = 1
    candidates: int = 1
    prior_draws: int | None = None
    ar_temperature: float = 1.0
    ar_top_k: int | None = None
    ar_guidance_scale: float = 1.0
    decoder: StageSampling = StageSampling(sampler="dpm++", steps=13, guidance_scale=3.0)
    upsampler: StageSampling = StageSampling(sampler="ddim", steps=27, guidance_scale=1.0)
    manipulation_steps: int | None = None
    autoguidance: bool = False
    distilled: bool = False
    judge: bool = False
    notes: dict = field(default_factory=dict)  # free text: where and how the stages were trained

    def __post_init__(self):
        if self.prior_kind not in PRIOR_KINDS:
            raise ValueError(f"unknown prior kind {self.prior_kind!r}: expected one of {', '.join(PRIOR_KINDS)}")
        for name in ("best_of", "candidates"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.prior_draws is not None and (not _positive_int(self.prior_draws)
                                             or self.candidates % self.prior_draws):
            raise ValueError(f"prior_draws must be None or a positive integer that divides candidates "
                             f"({self.candidates}), got {self.prior_draws!r}")
        if self.manipulation_steps is not None and not _positive_int(self.manipulation_steps):
            raise ValueError(f"manipulation_steps must be None or a positive integer, got {self.manipulation_steps!r}")
        for name in ("prior", "upsampler"):
            if getattr(self, name).guidance_interval is not None:
                raise ValueError(f"guidance_interval applies to the decoder only, got {name}.guidance_interval = "
                                 f"{getattr(self, name).guidance_interval!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown PipelineConfig keys: {sorted(unknown)}")
        data = dict(data)
        for name in ("prior", "decoder", "upsampler"):
            if name in data:
                data[name] = StageSampling(**data[name])
        return cls(**data)

    def with_(self, **changes) -> PipelineConfig:
        return replace(self, **changes)


def _halve(path: Path) -> None:
    """Rewrite a safetensors file with its float32 tensors as float16."""
    tensors = load_file(str(path))
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    write_tensors(path, half)


class UnCLIP:
    def __init__(self, *, clip: CLIP, decoder: Decoder, prior: DiffusionPrior | None = None,
                 ar_prior: ARPrior | None = None, upsamplers: Sequence[Upsampler] = (),
                 config: PipelineConfig | None = None, decoder_guide: Decoder | None = None,
                 decoder_distilled: Decoder | None = None, judge: Judge | None = None):
        if clip.tokenizer is None:
            raise ValueError("the pipeline's CLIP needs its tokenizer attached")
        self.clip, self.decoder, self.prior, self.ar_prior = clip.eval(), decoder.eval(), prior, ar_prior
        self.upsamplers = [u.eval() for u in upsamplers]
        self.decoder_guide = None if decoder_guide is None else decoder_guide.eval()
        self.config = config or PipelineConfig()
        self.decoder_distilled = None if decoder_distilled is None else decoder_distilled.eval()
        self.judge = None if judge is None else judge.eval()
        if judge is not None:
            judge.check_clip(clip)
        if decoder_guide is not None:
            decoder._check_guide(decoder_guide)
        if decoder_distilled is not None:
            decoder._check_guide(decoder_distilled, role="distilled decoder")
        self.source: str | None = None  # the directory it was loaded from, if any
        unet, encoder = decoder.config.unet, decoder.config.caption_encoder
        reader = encoder or decoder.config.caption_adapter  # whichever reads the token ids, if any
        states_width = None if encoder is not None else unet.text_width  # what it needs from the CLIP's text tower
        if unet.clip_dim not in (None, clip.config.embed_dim) or states_width not in (None, clip.config.text_width):
            raise ValueError(f"the decoder expects z_i of {unet.clip_dim} and token states of {unet.text_width}, the "
                             f"CLIP gives {clip.config.embed_dim} and {clip.config.text_width}")
        if reader is not None and (reader.vocab_size < clip.tokenizer.vocab_size
                                   or reader.context_length < clip.config.context_length):
            kind = "encoder" if encoder is not None else "adapter"
            raise ValueError(f"the decoder's caption {kind} reads {reader.vocab_size} token ids in a context of "
                             f"{reader.context_length}; the CLIP's tokenizer writes {clip.tokenizer.vocab_size} in "
                             f"{clip.config.context_length}")
        if unet.clip_dim is None and (prior is not None or ar_prior is not None):
            raise ValueError("the decoder reads the caption alone (a GLIDE-style decoder): it takes no prior")
        for p in (prior, ar_prior):
            if p is not None and p.config.embed_dim != clip.config.embed_dim:
                raise ValueError(f"a prior of embed_dim {p.config.embed_dim} does not fit a CLIP of "
                                 f"{clip.config.embed_dim}")
        self._check_stages()
        size = decoder.config.image_size
        for i, up in enumerate(self.upsamplers):
            if up.config.low_res_size != size:
                raise ValueError(f"upsampler {i + 1} takes {up.config.low_res_size} px, the stage before gives {size}")
            size = up.config.image_size

    def _check_stages(self) -> None:
        """Each stage the config samples by (guide, distilled decoder, judge) is one the pipeline has."""
        if self.config.autoguidance and self.decoder_guide is None:
            raise ValueError("the pipeline config asks for autoguidance, but the pipeline has no decoder_guide stage "
                             "(unclip assemble --decoder-guide DIR)")
        if self.config.distilled and self.decoder_distilled is None:
            raise ValueError("the pipeline config asks for its distilled decoder, but the pipeline has no "
                             "decoder_distilled stage (unclip assemble --decoder-distilled DIR)")
        if self.config.judge and self.judge is None:
            raise ValueError("the pipeline config asks for its judge to re-rank, but the pipeline has no judge stage "
                             "(unclip assemble --judge DIR)")

    # ----- files --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> UnCLIP:
        directory = Path(directory)
        record_path = directory / "pipeline.json"
        if not record_path.is_file():
            raise FileNotFoundError(f"{directory} holds no pipeline.json: not an unclip pipeline directory")
        record = json.loads(record_path.read_text())
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{record_path} has format_version {record.get('format_version')!r}; this unclip reads "
                             f"version {FORMAT_VERSION}")
        stages = record.get("stages", {})
        ups = [load_decoder(directory / name, device=device) for name in stages.get("upsamplers", [])]
        pipe = cls(clip=load_clip(directory / "clip", device=device),
                   decoder=load_decoder(directory / "decoder", device=device),
                   prior=load_prior(directory / "prior", device=device) if stages.get("prior") else None,
                   ar_prior=load_prior(directory / "ar_prior", device=device) if stages.get("ar_prior") else None,
                   upsamplers=ups, config=PipelineConfig.from_dict(record["config"]),
                   decoder_guide=load_decoder(directory / "decoder_guide", device=device)
                   if stages.get("decoder_guide") else None,
                   decoder_distilled=load_decoder(directory / "decoder_distilled", device=device)
                   if stages.get("decoder_distilled") else None,
                   judge=load_judge(directory / "judge", device=device) if stages.get("judge") else None)
        pipe.source = str(directory)
        return pipe

    def save_pretrained(self, directory: str | os.PathLike, *, half: bool = False) -> Path:
        """Write every stage (float16 weights with half=True) and pipeline.json; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_clip(directory / "clip", self.clip)
        save_decoder(directory / "decoder", self.decoder)
        if self.prior is not None:
            save_prior(directory / "prior", self.prior)
        if self.ar_prior is not None:
            save_prior(directory / "ar_prior", self.ar_prior)
        if self.decoder_guide is not None:
            save_decoder(directory / "decoder_guide", self.decoder_guide)
        if self.decoder_distilled is not None:
            save_decoder(directory / "decoder_distilled", self.decoder_distilled)
        if self.judge is not None:
            save_judge(directory / "judge", self.judge)
        names = [f"upsampler{i + 1}" for i in range(len(self.upsamplers))]
        for name, up in zip(names, self.upsamplers):
            save_decoder(directory / name, up)
        if half:
            for path in directory.glob("*/model.safetensors"):
                _halve(path)
        record = {"format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                  "stages": {"prior": self.prior is not None, "ar_prior": self.ar_prior is not None,
                             "upsamplers": names} | ({"decoder_guide": True} if self.decoder_guide else {})
                  | ({"decoder_distilled": True} if self.decoder_distilled else {})
                  | ({"judge": True} if self.judge else {})}
        (directory / "pipeline.json").write_text(json.dumps(record, indent=1))
        return directory

    def to(self, device: str | torch.device) -> UnCLIP:
        for module in (self.clip, self.decoder, self.decoder_guide, self.decoder_distilled, self.prior, self.ar_prior,
                       self.judge, *self.upsamplers):
            if module is not None:
                module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    @property
    def sizes(self) -> list[int]:
        """Image side after each stage: decoder first."""
        return [self.decoder.config.image_size] + [u.config.image_size for u in self.upsamplers]

    # ----- stages ---------------------------------------------------------------------------------------
    def tokens(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids (B, T); an empty caption or one past CLIP's context is refused, naming it."""
        if isinstance(captions, str) or not captions:
            raise ValueError("captions must be a non-empty list of strings")
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty: {caption!r}")
        return self.clip.tokenizer(list(captions), truncate=False).to(self.device)

    @torch.no_grad()
    def text_conditioning(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_t (B, E) unit-norm, token states (B, T, W) and mask (B, T) of the captions."""
        tokens = self.tokens(captions)
        states, mask = text_conditioning(self.clip, tokens)
        return torch.nn.functional.normalize(self.clip.encode_text_tokens(tokens), dim=-1), states, mask

    @torch.no_grad()
    def image_embeddings(self, captions: Sequence[str], *, prior: str | None = None,
                         generator: Generators = None) -> torch.Tensor | None:
        """z_i (B, E) for captions by the chosen prior kind (None for kind "none")."""
        kind, cfg = prior or self.config.prior_kind, self.config
        self.tokens(captions)  # check the captions before any work
        if self.decoder.config.unet.clip_dim is None and kind != "none":
            raise ValueError(f"this pipeline's decoder reads the caption alone (a GLIDE-style baseline), so it takes "
                             f"no z_i: prior kind {kind!r} does not apply; use none")
        if kind == "diffusion":
            if self.prior is None:
                raise ValueError("this pipeline has no diffusion prior; choose --prior ar, text-embedding or none")
            options = dict(steps=cfg.prior.steps, sampler=cfg.prior.sampler, guidance_scale=cfg.prior.guidance_scale,
                           best_of=cfg.best_of)
            return image_embeddings(kind, clip=self.clip, captions=captions, prior=self.prior, generator=generator,
                                    **options)
        if kind == "ar":
            if self.ar_prior is None:
                raise ValueError("this pipeline has no autoregressive prior; choose --prior diffusion, "
                                 "text-embedding or none")
            return image_embeddings(kind, clip=self.clip, captions=captions, prior=self.ar_prior, generator=generator,
                                    temperature=cfg.ar_temperature, top_k=cfg.ar_top_k,
                                    guidance_scale=cfg.ar_guidance_scale)
        return image_embeddings(kind, clip=self.clip, captions=captions)

    @torch.no_grad()
    def decode(self, image_embedding: torch.Tensor | None, *, captions: Sequence[str] | None = None,
               generator: Generators = None, x_T: torch.Tensor | None = None, eta: float = 0.0,
               guidance_scale: float | None = None, steps: int | None = None,
               sampler: str | None = None, carry_estimate: bool = True, autoguidance: bool = False,
               distilled: bool = False) -> torch.Tensor:
        """Decoder images (B, 3, S, S) in [-1, 1] from z_i and/or the captions (read as the decoder reads them:
        the CLIP's token states, or its own caption encoder's); without captions it decodes z_i alone. The sampler
        is the pipeline's, or DDIM when eta > 0 (the only one of them with an eta). `carry_estimate`: see
        Decoder.denoiser (self-conditioned decoders only). `autoguidance`: guide by the pipeline's decoder_guide
        instead of classifier-free guidance (generation does where config.autoguidance says so). `distilled`: sample
        the decoder_distilled stage unguided, its guidance built in (generation does where config.distilled says so;
        guidance_scale and autoguidance do not apply to it)."""
        cfg = self.config.decoder
        caption = {} if captions is None else self.decoder.caption_inputs(self.tokens(captions), clip=self.clip)
        if distilled:
            if self.decoder_distilled is None:
                raise ValueError("distilled=True needs the pipeline's decoder_distilled stage, which this pipeline "
                                 "lacks")
            if autoguidance or guidance_scale not in (None, 1):
                raise ValueError("the distilled decoder samples unguided (its guidance is built in): autoguidance "
                                 f"and guidance_scale={guidance_scale} do not apply to it")
            network, guidance = self.decoder_distilled, {}
        else:
            network, guidance = self.decoder, dict(
                guidance_scale=cfg.guidance_scale if guidance_scale is None else guidance_scale,
                guidance_interval=cfg.guidance_interval, guide=self._guide(autoguidance))
        return network.sample(image_embedding=image_embedding, **caption,
                              steps=steps or cfg.steps, sampler=sampler or ("ddim" if eta else cfg.sampler),
                              eta=eta, generator=generator, x_T=x_T, carry_estimate=carry_estimate, **guidance)

    def _guide(self, autoguidance: bool) -> Decoder | None:
        if autoguidance and self.decoder_guide is None:
            raise ValueError("autoguidance needs the pipeline's decoder_guide stage, which this pipeline lacks")
        return self.decoder_guide if autoguidance else None

    @torch.no_grad()
    def upsample(self, images: torch.Tensor, *, generator: Generators = None) -> list[torch.Tensor]:
        """Each upsampler's output in turn, starting from the decoder's images."""
        out, cfg = [], self.config.upsampler
        for up in self.upsamplers:
            images = up.sample(low_res=images, steps=cfg.steps, sampler=cfg.sampler, generator=generator)
            out.append(images)
        return out

    @torch.no_grad()
    def final_images(self, images: torch.Tensor, *, seed: int = 0) -> list[Image.Image]:
        """Decoder-size images (B, 3, S, S) -> final-size PIL images through every upsampler, seeded."""
        ups = self.upsample(images, generator=torch.Generator(self.device).manual_seed(seed))
        return [to_pil(x) for x in (ups[-1] if ups else images)]

    def caption_generators(self, n: int, seed: int | Sequence[int]) -> list[torch.Generator]:
        """One generator per caption: caption i's seeded seed + i (or seed[i] for a sequence of n seeds)."""
        seeds = [seed + i for i in range(n)] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} captions")
        return [torch.Generator(self.device).manual_seed(s) for s in seeds]

    @torch.no_grad()
    def candidates(self, captions: Sequence[str], *, num_images: int = 1, seed: int | Sequence[int] = 0,
                   prior: str | None = None) -> torch.Tensor:
        """The decoder images (N * num_images * K, 3, S, S) that __call__ re-ranks, K = config.candidates: caption-
        major, then image, then candidate. Every random draw for caption i's rows (prior, decoder) comes from caption
        i's own generator (caption_generators), so its images do not depend on the other captions in the batch."""
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        k = self.config.candidates
        draws = self.config.prior_draws or k  # z_i per image, each decoded k / draws times
        generators = self.caption_generators(len(captions), seed)
        batch = [c for c in captions for _ in range(num_images * k)]
        rows = [g for g in generators for _ in range(num_images * k)]
        z_i = self.image_embeddings([c for c in captions for _ in range(num_images * draws)], prior=prior,
                                    generator=[g for g in generators for _ in range(num_images * draws)])
        if z_i is not None and draws < k:
            z_i = z_i.repeat_interleave(k // draws, dim=0)  # (N * num_images * k, E)
        if self.config.distilled:
            return self.decode(z_i, captions=batch, generator=rows, distilled=True)
        return self.decode(z_i, captions=batch, generator=rows, autoguidance=self.config.autoguidance)

    @torch.no_grad()
    def __call__(self, captions: str | Sequence[str], *, num_images: int = 1, seed: int | Sequence[int] = 0,
                 prior: str | None = None, stages: bool = False,
                 upsample: bool = True) -> list[Image.Image] | dict[str, list[Image.Image]]:
        """Images for each caption (num_images per caption, caption-major), seeded per caption.

        Caption i draws from its own generator, seeded seed + i (or seed[i] given one seed per caption), so a batch
        equals its captions drawn one by one: pipe(captions, seed=s)[i] is pipe([captions[i]], seed=s + i)[0] (up to
        the rounding of batched arithmetic). Returns the final stage's PIL images, or with stages=True a dict
        {"decoder": [...], "upsampler1": [...]}. upsample=False stops after the decoder. With config.candidates = K > 1
        each image is the best of K decoder images by CLIP, or by the judge where config.judge says so
        (unclip/rerank.py), drawn by `candidates`.
        """
        captions = [captions] if isinstance(captions, str) else list(captions)
        k = self.config.candidates
        decoded = self.candidates(captions, num_images=num_images, seed=seed, prior=prior)  # (B * K, 3, S, S)
        if k > 1 and self.config.judge:  # each candidate against its caption, read by the judge
            tokens = self.tokens(captions).repeat_interleave(num_images * k, dim=0)  # (B * K, T)
            decoded = decoded[pick_best(judge_scores(self.judge, self.clip, decoded, tokens), candidates=k)]
        elif k > 1:  # each caption's z_t once, repeated for its images and their candidates
            z_t = self.text_conditioning(captions)[0].repeat_interleave(num_images * k, dim=0)
            decoded = decoded[pick_best(clip_scores(self.clip, decoded, z_t), candidates=k)]
        images = {"decoder": decoded}
        if upsample:  # fresh generators: the upsamplers' noise does not depend on how many candidates were drawn
            kept = [g for g in self.caption_generators(len(captions), seed) for _ in range(num_images)]
            for i, x in enumerate(self.upsample(images["decoder"], generator=kept)):
                images[f"upsampler{i + 1}"] = x
        pil = {name: [to_pil(x) for x in batch_images] for name, batch_images in images.items()}
        return pil if stages else pil[list(pil)[-1]]
