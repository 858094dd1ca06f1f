"""Gaussian diffusion for any tensor shape: schedules, parameterisations, losses, guidance."""

from .gaussian import DiffusionConfig, GaussianDiffusion, ModelFn, Prediction, threshold_x0
from .guidance import autoguidance, classifier_free_guidance, drop_condition, dropout_mask
from .params import PREDICTIONS, min_snr_weight, target, to_x0_eps
from .schedule import Schedule, make_schedule, rescale_zero_terminal_snr, spaced_timesteps

__all__ = [
    "PREDICTIONS", "DiffusionConfig", "GaussianDiffusion", "ModelFn", "Prediction", "Schedule",
    "autoguidance", "classifier_free_guidance", "drop_condition", "dropout_mask", "make_schedule", "min_snr_weight",
    "rescale_zero_terminal_snr",
    "spaced_timesteps", "target", "threshold_x0", "to_x0_eps",
]
