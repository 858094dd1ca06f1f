"""The training engine shared by every stage: loop, checkpoints, EMA, learning-rate schedule."""

from .checkpoint import latest_checkpoint, load_checkpoint, read_tensors, refuse_pickle, save_checkpoint
from .ema import EMA
from .grids import sample_grid_hook
from .loop import NonFiniteLossError, TrainConfig, Trainer, refuse_other_train_config
from .lr import lr_at

__all__ = [
    "EMA", "NonFiniteLossError", "TrainConfig", "Trainer", "latest_checkpoint", "load_checkpoint", "lr_at",
    "read_tensors", "refuse_other_train_config", "refuse_pickle", "sample_grid_hook", "save_checkpoint",
]
