"""`make demo`: what the shipped pipeline does, in one HTML page (demo/index.html).

    generate/       8 captions -> images, framed green or red by the world's scorer
    variations/     a Shapes test image and 4 variations of it (unCLIP §3.1)
    interpolation/  7 frames between two test images (§3.2)
    textdiff/       "a red circle" -> "a blue circle" applied to an image of a red circle (§3.3)
    world/          real test scenes and their scores (the scorer's own check)
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

from .grid import captioned_grid
from .manipulate import VARIATION_ETA, interpolate, text_diff, variations
from .outputs import write_outputs
from .pipeline import UnCLIP
from .world import render, sample_scene, score_image

CAPTIONS = ("a red circle", "a large blue square on a black background", "two small yellow stars",
            "a green cross to the left of a pink diamond", "an orange triangle in the top left",
            "a cyan circle and a purple square", "three small red squares", "a yellow circle above a blue cross")


def first_scene(predicate: Callable, split: str = "test"):
    """The first scene of a split that satisfies `predicate` (deterministic)."""
    for index in range(100_000):
        scene = sample_scene(split, index)
        if predicate(scene):
            return index, scene
    raise LookupError("no scene satisfies the predicate")


def make_demo(pipe: UnCLIP, out: str | os.PathLike, *, log: Callable[[str], None] = print) -> Path:
    """Write every section and index.html into `out`; returns the index path."""
    out = Path(out)
    size = pipe.decoder.config.image_size
    sections = []

    log("generating 8 captions ...")
    images = pipe(list(CAPTIONS), seed=0)
    verdicts = [score_image(im, c).correct for im, c in zip(images, CAPTIONS)]
    write_outputs(out / "generate", images, [{"caption": c, "correct": v} for c, v in zip(CAPTIONS, verdicts)])
    captioned_grid(images, list(CAPTIONS), columns=4, verdicts=verdicts).save(out / "generate" / "grid.png")
    sections.append(("Text to image", f"{sum(verdicts)} of {len(CAPTIONS)} called correct by the world's scorer "
                     "(green frame) with the default diffusion prior.", "generate/grid.png"))

    log("varying a test image ...")
    index, scene = first_scene(lambda s: s.form == "pair")
    source = render(scene, size)
    x = variations(pipe, source, n=4, eta=VARIATION_ETA, seed=0)
    frames = [render(scene, pipe.sizes[-1])] + pipe.final_images(x)
    labels = [f"input: {scene.caption}"] + [f"variation {k + 1}" for k in range(4)]
    write_outputs(out / "variations", frames, [{"caption": c, "source": f"test/{index}"} for c in labels],
                  grid_columns=5)
    sections.append(("Variations", "The input's CLIP embedding and its DDIM-inverted noise, decoded with DDIM "
                     f"eta {VARIATION_ETA} (unCLIP §3.1).", "variations/grid.png"))

    log("interpolating between two test images ...")
    (ia, a), (ib, b) = first_scene(lambda s: s.form == "single"), first_scene(lambda s: s.form == "count")
    x = interpolate(pipe, render(a, size), render(b, size), steps=7)
    thetas = [k / 6 for k in range(7)]
    write_outputs(out / "interpolation", pipe.final_images(x), [{"caption": f"{t:.2f}", "theta": t,
                                                            "source": [f"test/{ia}", f"test/{ib}"]} for t in thetas],
                  grid_columns=7)
    sections.append(("Interpolation", f"From “{a.caption}” to “{b.caption}”: slerp of z_i and of the inverted "
                     "x_T (§3.2).", "interpolation/grid.png"))

    log("text diff: a red circle -> a blue circle ...")
    ir, red = first_scene(lambda s: s.form == "single" and s.objects[0].colour == "red"
                          and s.objects[0].shape == "circle")
    x = text_diff(pipe, render(red, size), old="a red circle", new="a blue circle", steps=5)
    thetas = [0.5 * k / 4 for k in range(5)]
    frames = [{"caption": f"theta {t:.2f}", "theta": t, "source": f"test/{ir}"} for t in thetas]
    write_outputs(out / "textdiff", pipe.final_images(x), frames, grid_columns=5)
    sections.append(("Text diff", f"“{red.caption}”, moved along normalise(z_t(a blue circle) − "
                     "z_t(a red circle)) (§3.3).", "textdiff/grid.png"))

    body = "\n".join(f"<h2>{html.escape(title)}</h2>\n<p>{html.escape(text)}</p>\n<img src=\"{src}\" alt=\""
                     f"{html.escape(title)}\">" for title, text, src in sections)
    index_path = out / "index.html"
    index_path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>unclip demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} img{{max-width:100%;image-rendering:pixelated}}
</style></head><body>
<h1>unclip: DALL-E 2 on the Shapes world</h1>
<p>Model: {html.escape(str(pipe.source or 'in memory'))}; stages {' → '.join(f'{s} px' for s in pipe.sizes)}.
</p>
{body}
</body></html>
""")
    return index_path
