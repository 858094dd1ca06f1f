"""Samplers: pure functions of a denoiser `model_fn(x_t, t)`, a GaussianDiffusion and a torch.Generator."""

from .ddim import ddim_invert, ddim_sample
from .ddpm import ddpm_sample
from .dpm_solver import dpm_solver_pp_sample

SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpm++": dpm_solver_pp_sample}

__all__ = ["SAMPLERS", "ddim_invert", "ddim_sample", "ddpm_sample", "dpm_solver_pp_sample"]
