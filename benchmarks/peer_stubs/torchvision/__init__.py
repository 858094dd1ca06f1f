"""A stand-in for torchvision, only for benchmarks/decoder_peer.py: dalle2-pytorch imports torchvision at module
level for a few image transforms (and VGG in its VQGAN) that the benchmark never calls. Installing the real
torchvision would pull a second torch build; this package satisfies the imports, and anything called raises."""

from . import datasets, models, transforms, utils

__version__ = "0.0.0+stub"
__all__ = ["datasets", "models", "transforms", "utils"]
