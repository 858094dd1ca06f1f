"""Shared network primitives (timestep embedding now; attention and transformer blocks with the stages)."""

from .embedding import timestep_embedding

__all__ = ["timestep_embedding"]
