"""Writing a benchmark's JSON report (every script here ends by writing one to its --out path)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_report(path: str | os.PathLike, report: dict) -> Path:
    """Write `report` as indented JSON to `path`, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
