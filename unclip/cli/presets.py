"""`unclip train STAGE --list-presets`: every stage's training recipes by name, marked where `unclip train all` uses
them. What each recipe is and what it measured is written beside it, in the stage's train.py, and in docs/."""

from __future__ import annotations

STAGES = ("clip", "prior", "ar-prior", "decoder", "upsampler", "decoder-distill", "judge")


def preset_names() -> dict[str, list[str]]:
    """Each stage's recipe names, in the order their modules define them."""
    from ..clip.train import RECIPES as CLIP
    from ..decoder.distill import DISTILL_RECIPES
    from ..decoder.train import STAGE_OF
    from ..judge.train import RECIPES as JUDGE
    from ..prior.train import RECIPES as PRIOR

    return {"clip": list(CLIP), "prior": list(PRIOR["diffusion"]), "ar-prior": list(PRIOR["autoregressive"]),
            "decoder": [n for n, s in STAGE_OF.items() if s == "decoder"],
            "upsampler": [n for n, s in STAGE_OF.items() if s == "upsampler"], "decoder-distill": list(DISTILL_RECIPES),
            "judge": list(JUDGE)}


def pipeline_uses() -> dict[tuple[str, str], list[str]]:
    """(stage, recipe) -> where each `unclip train all` preset uses it, e.g. "shapes-tiny, cycle 3 of 10"."""
    from ..train_all import PRESETS

    uses: dict[tuple[str, str], list[str]] = {}
    for name, p in PRESETS.items():
        cycles = (p.decoder, *p.decoder_finetunes)
        used = [("clip", p.clip, name), ("prior", p.prior, name), ("ar-prior", p.ar_prior, name)]
        used += [("decoder", recipe, name if len(cycles) == 1 else f"{name}, cycle {i} of {len(cycles)}")
                 for i, recipe in enumerate(cycles, 1)]
        used += [("upsampler", recipe, name) for recipe in p.upsamplers]
        used += [("decoder-distill", p.distill, name)] if p.distill else []
        used += [("judge", p.judge, name)] if p.judge else []
        for stage, recipe, where in used:
            uses.setdefault((stage, recipe), []).append(where)
    return uses


def format_presets(stage: str) -> str:
    """The listing for one stage, or for every stage when `stage` is "all"."""
    names, uses = preset_names(), pipeline_uses()
    lines = []
    if stage == "all":
        from ..train_all import PRESETS

        lines += ["all (unclip train all):", *(f"  {name}" for name in PRESETS)]
    for s in STAGES if stage == "all" else (stage,):
        lines.append(f"{s}:")
        for name in names[s]:
            where = uses.get((s, name))
            lines.append(f"  {name}" + (f"  [{'; '.join(where)}]" if where else ""))
    return "\n".join(lines)
