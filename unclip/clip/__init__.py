"""CLIP: the contrastive image/text encoders unCLIP stands on."""

from .config import PRESETS, CLIPConfig, preset
from .model import CLIP, contrastive_loss
from .weights import load_clip, load_openai_state_dict, load_pretrained, save_clip
from .zeroshot import classifier_weights, classify, classify_marginal, marginal_class_scores, recall_at_k

__all__ = [
    "CLIP", "PRESETS", "CLIPConfig", "classifier_weights", "classify", "classify_marginal", "contrastive_loss",
    "load_clip", "load_openai_state_dict", "load_pretrained", "marginal_class_scores", "preset", "recall_at_k",
    "save_clip",
]
