"""The pictures `unclip eval` writes beside report.md: the first samples with their captions, and accuracy by skill.

samples.png needs only Pillow and is always written; on the Shapes world each image is framed green or red by the
world's scorer. accuracy_by_skill.png (Shapes only) needs matplotlib, the optional `plots` extra, and is skipped
without it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..grid import captioned_grid
from ..world import read_manifest
from ..world.captions import SKILLS
from ..world.score import score_image

GRID_IMAGES = 16


def samples_grid(out: Path, *, scored: bool, split: str = "test") -> str | None:
    """Write out/samples.png from the first images of out/SPLIT; returns its name (None when there are none)."""
    entries, _ = read_manifest(out / split)
    entries = entries[:GRID_IMAGES]
    if not entries:
        return None
    images = [Image.open(out / split / e.file).convert("RGB") for e in entries]
    captions = [e.caption for e in entries]
    verdicts = [score_image(im, c).correct for im, c in zip(images, captions)] if scored else None
    captioned_grid(images, captions, columns=8, verdicts=verdicts).save(out / "samples.png")
    return "samples.png"


def accuracy_chart(out: Path, metrics: dict) -> str | None:
    """Write out/accuracy_by_skill.png (bars per skill, overall and the novel split); None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    skills = [tag for tag in SKILLS if tag in metrics["skills"]]
    names, values = skills + ["overall"], [metrics["skills"][tag] for tag in skills] + [metrics["overall"]]
    colours = ["#4c72b0"] * len(skills) + ["#333333"]
    if metrics.get("novel_overall") is not None:
        names, values, colours = names + ["novel split"], values + [metrics["novel_overall"]], colours + ["#dd8452"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(names), 3.4))
    bars = ax.bar(names, values, color=colours)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="scorer accuracy", title=f"unclip eval: {metrics.get('model')}")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_skill.png", dpi=110)
    plt.close(fig)
    return "accuracy_by_skill.png"


def write_plots(out: Path, metrics: dict) -> list[str]:
    """Every picture this evaluation can have; returns the names written (relative to out)."""
    shapes = metrics.get("overall") is not None
    written = [samples_grid(out, scored=shapes, split=metrics.get("split", "test"))]
    if shapes:
        written.append(accuracy_chart(out, metrics))
    return [name for name in written if name is not None]
