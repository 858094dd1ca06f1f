"""Data for training: resumable sampling of any map-style dataset."""

from .sampler import ResumableBatchSampler

__all__ = ["ResumableBatchSampler"]
