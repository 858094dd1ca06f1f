"""The paper's image manipulations (unCLIP §3), done the paper's way: an image becomes a bipartite latent
(z_i from CLIP's image encoder, x_T from DDIM inversion of the decoder conditioned on z_i), and edits move
through that latent.

- variations (§3.1): decode (z_i, x_T) with DDIM eta > 0; eta = 0 reconstructs the image, larger eta
  wanders further from it while keeping what z_i holds (VARIATION_ETA, the default, is chosen by measurement).
- interpolations (§3.2): slerp between two images' z_i, with x_T slerped between their inversions (or
  one fixed x_T for the whole strip).
- text diffs (§3.3): z_d = normalise(z_t(new caption) - z_t(old caption)); decode slerp(z_i, z_d, theta)
  for theta over a range, with x_T from the inversion held fixed.
Functions return decoder-size images (B, 3, S, S) in [-1, 1]; UnCLIP.upsample takes them to full size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .data.images import to_tensor
from .pipeline import UnCLIP
from .samplers import ddim_invert


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (any shape (B, ...)): theta 0 gives a, 1 gives b.

    Works on each row flattened; where a and b are (nearly) parallel it falls back to linear interpolation.
    Norms are interpolated linearly, so unit vectors stay unit vectors and Gaussian noise keeps its scale.
    """
    shape = a.shape
    a2, b2 = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    theta = torch.as_tensor(theta, dtype=torch.float64, device=a.device).reshape(-1, 1)
    na, nb = a2.norm(dim=1, keepdim=True), b2.norm(dim=1, keepdim=True)
    ua, ub = a2 / na.clamp(min=1e-12), b2 / nb.clamp(min=1e-12)
    omega = torch.arccos((ua * ub).sum(1, keepdim=True).clamp(-1, 1))  # (B, 1)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - theta) * omega) / so.where(safe, 1), 1 - theta)
    wb = torch.where(safe, torch.sin(theta * omega) / so.where(safe, 1), theta)
    direction = wa * ua + wb * ub
    out = direction * ((1 - theta) * na + theta * nb)
    return out.to(a.dtype).reshape(shape)


# Inversion and every manipulation's decode (decode_latent) run unguided. DDIM inversion under classifier-free guidance
# drifts (Mokady et al. 2023, null-text inversion §3): measured on the shipped pipeline (benchmarks/manipulations.py,
# 30 sources), the eta = 0 round trip is scored correct 0.033 at the pipeline's guidance 3 and 0.933 unguided.
MANIPULATION_GUIDANCE = 1.0


# The default DDIM eta of variations. The paper does not give its eta; larger eta wanders further, and with this
# decoder the scene goes with it. Measured on the shipped pipeline (benchmarks/manipulations.py --n 30 --k 4, 29
# correctly reconstructed sources, unguided): variations scored correct 0.905 / 0.767 / 0.647 / 0.586 / 0.336 at eta
# 0.2 / 0.25 / 0.3 / 0.4 / 0.8, pairwise RMS 0.040 / 0.051 / 0.061 / 0.079 / 0.138 (0..1 pixel scale). 0.2 is the
# largest eta measured that keeps the 80%; pass a larger one for more varied images.
VARIATION_ETA = 0.2


@torch.no_grad()
def encode_images(pipe: UnCLIP, images: Sequence[Image.Image], *, steps: int | None = None,
                  fixed_point_iters: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The bipartite latent of each image: (z_i (B, E) unit-norm, x_T (B, 3, S, S)) at the decoder's size S.

    x_T comes from DDIM inversion of the decoder conditioned on z_i alone (no caption), unguided
    (MANIPULATION_GUIDANCE), refined by `fixed_point_iters` per step so decoding it returns the image.
    """
    if not images:
        raise ValueError("no images given")
    device = pipe.device
    z_i = pipe.clip.encode_image(list(images)).to(device)
    size = pipe.decoder.config.image_size
    x0 = torch.stack([to_tensor(im.convert("RGB"), size) for im in images]).to(device)
    cfg = pipe.config.decoder
    # a self-conditioned decoder inverts and decodes without carrying its estimate, so decoding retraces the inversion
    model_fn = pipe.decoder.denoiser(image_embedding=z_i, guidance_scale=MANIPULATION_GUIDANCE, carry_estimate=False)
    steps = steps or pipe.config.manipulation_steps or cfg.steps
    x_T = ddim_invert(model_fn, pipe.decoder.diffusion, x0, steps=steps, fixed_point_iters=fixed_point_iters)
    return z_i, x_T


def decode_latent(pipe: UnCLIP, z_i: torch.Tensor, x_T: torch.Tensor, *, eta: float = 0.0,
                  generator: torch.Generator | None = None, steps: int | None = None,
                  guidance_scale: float = MANIPULATION_GUIDANCE) -> torch.Tensor:
    """Images (B, 3, S, S) decoded from bipartite latents z_i (B, E), x_T (B, 3, S, S) the way every
    manipulation decodes them: with DDIM, whose eta = 0 path is the one the inversion retraced backwards (whatever
    sampler the pipeline generates with), by default at MANIPULATION_GUIDANCE, the guidance the inversion ran at."""
    return pipe.decode(z_i, x_T=x_T, eta=eta, generator=generator, steps=steps or pipe.config.manipulation_steps,
                       guidance_scale=guidance_scale, sampler="ddim", carry_estimate=False)


@torch.no_grad()
def variations(pipe: UnCLIP, image: Image.Image, *, n: int = 4, eta: float = VARIATION_ETA, seed: int = 0,
               steps: int | None = None, guidance_scale: float = MANIPULATION_GUIDANCE) -> torch.Tensor:
    """n variations (n, 3, S, S) of one image: its (z_i, x_T) decoded with DDIM at the given eta (§3.1) and
    guidance (the inversion is unguided whatever the decode's guidance)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    z_i, x_T = encode_images(pipe, [image], steps=steps)
    generator = torch.Generator(pipe.device).manual_seed(seed)
    return decode_latent(pipe, z_i.expand(n, -1), x_T.expand(n, -1, -1, -1).clone(), eta=eta, generator=generator,
                         steps=steps, guidance_scale=guidance_scale)


@torch.no_grad()
def interpolate(pipe: UnCLIP, image_a: Image.Image, image_b: Image.Image, *, steps: int = 7,
                fixed_noise: bool = False, seed: int = 0, decoder_steps: int | None = None,
                guidance_scale: float = MANIPULATION_GUIDANCE) -> torch.Tensor:
    """A strip (steps, 3, S, S) from image_a to image_b: slerp of z_i, and of the inverted x_T (§3.2), or with
    fixed_noise one x_T drawn from `seed` for every frame."""
    if steps < 2:
        raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
    z, x_T = encode_images(pipe, [image_a, image_b], steps=decoder_steps)
    thetas = torch.linspace(0, 1, steps, device=z.device)
    z_path = F.normalize(slerp(z[:1].expand(steps, -1), z[1:].expand(steps, -1), thetas), dim=-1)
    generator = torch.Generator(pipe.device).manual_seed(seed)
    if fixed_noise:
        noise = torch.randn(x_T[:1].shape, generator=generator, device=z.device).expand(steps, -1, -1, -1).clone()
    else:
        noise = slerp(x_T[:1].expand(steps, -1, -1, -1), x_T[1:].expand(steps, -1, -1, -1), thetas)
    return decode_latent(pipe, z_path, noise, generator=generator, steps=decoder_steps, guidance_scale=guidance_scale)


@torch.no_grad()
def text_diff(pipe: UnCLIP, image: Image.Image, *, old: str, new: str, steps: int = 5, max_theta: float = 0.5,
              decoder_steps: int | None = None, guidance_scale: float = MANIPULATION_GUIDANCE) -> torch.Tensor:
    """A strip (steps, 3, S, S) editing `image` from caption `old` towards `new` (§3.3): decode
    slerp(z_i, z_d, theta), z_d = normalise(z_t(new) - z_t(old)), theta from 0 to max_theta, x_T fixed."""
    if steps < 2:
        raise ValueError(f"a text diff needs steps >= 2, got {steps}")
    if not 0 < max_theta <= 1:
        raise ValueError(f"max_theta must be in (0, 1], got {max_theta}")
    z_t, _, _ = pipe.text_conditioning([old, new])
    diff = z_t[1] - z_t[0]
    if diff.norm() < 1e-6:
        raise ValueError(f"captions {old!r} and {new!r} have the same CLIP text embedding: nothing to move along")
    z_d = F.normalize(diff, dim=-1)
    z_i, x_T = encode_images(pipe, [image], steps=decoder_steps)
    thetas = torch.linspace(0, max_theta, steps, device=z_i.device)
    z_path = F.normalize(slerp(z_i.expand(steps, -1), z_d[None].expand(steps, -1), thetas), dim=-1)
    return decode_latent(pipe, z_path, x_T.expand(steps, -1, -1, -1).clone(), steps=decoder_steps,
                         guidance_scale=guidance_scale)
