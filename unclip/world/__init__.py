"""The Shapes world (shared/WORLD.md v1): scenes, renderer, captions, parser and exact scorer."""

from .captions import SKILLS, CaptionSpec, ObjectSpec, format_caption, parse_caption
from .dataset import ShapesDataset, collate
from .manifest import MANIFEST, read_manifest, score_entries, summarise, write_world_samples
from .parse import ParsedImage, ParsedObject, parse_image
from .perturb import ATTRIBUTES, perturb
from .render import render, render_array
from .scene import Scene, WorldObject, sample_scene
from .score import ScoreResult, accuracy_by_skill, caption_holds, score_image
from .vocab import HELD_OUT, SPLITS

__all__ = [
    "ATTRIBUTES", "HELD_OUT", "MANIFEST", "SKILLS", "SPLITS", "CaptionSpec", "ObjectSpec", "ParsedImage",
    "ParsedObject", "Scene", "ScoreResult", "ShapesDataset", "WorldObject", "accuracy_by_skill", "caption_holds",
    "collate", "format_caption", "parse_caption", "parse_image", "perturb", "read_manifest", "render",
    "render_array", "sample_scene", "score_entries", "score_image", "summarise", "write_world_samples",
]
