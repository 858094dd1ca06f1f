"""The priors (unCLIP §2.2): caption -> CLIP image embedding z_i, by diffusion or autoregressively,
and the paper's no-prior baselines."""

from .autoregressive import ARPrior
from .kinds import PRIOR_KINDS, image_embeddings
from .config import ARPriorConfig, DiffusionPriorConfig
from .diffusion import DiffusionPrior, PriorTransformer
from .pca import PCA
from .quantize import Quantizer
from .weights import load_prior, save_prior

__all__ = [
    "ARPrior", "ARPriorConfig", "DiffusionPrior", "DiffusionPriorConfig", "PCA", "PRIOR_KINDS", "PriorTransformer",
    "Quantizer", "image_embeddings", "load_prior", "save_prior",
]
