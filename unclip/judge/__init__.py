"""The judge: an image-text matching cross-encoder that re-ranks the pipeline's candidate images (rerank.py)."""

from .config import PRESETS, JudgeConfig, preset
from .model import Judge
from .weights import load_judge, save_judge

__all__ = ["PRESETS", "Judge", "JudgeConfig", "load_judge", "preset", "save_judge"]
