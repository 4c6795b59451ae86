"""Frozen vs unfrozen twins (`bvvlab compare`): the same seed, data order and schedule, the
embedding frozen in one and trained in the other, their curves in one figure."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from bvvlab.core.atomic import ensure_dir, write_json_atomic


def compare(cfg: Any, figures: str | Path | None = None) -> Path:
    """Train the frozen and the unfrozen twin (same seed, data order, schedule) under `cfg.out`
    (`frozen/`, `unfrozen/`), write overlaid curves to `cfg.out/compare.html` and `compare.json`;
    with `figures=DIR` also a copy `DIR/compare_<slug of cfg.out>.html`. Returns `cfg.out`."""
    from bvvlab.app import plots
    from bvvlab.core.config import explicit, replace
    from bvvlab.core.outputs import write_figure
    from bvvlab.train.loop import read_metrics, train

    if not cfg.frozen and "frozen" in (explicit(cfg) or ()):
        raise ValueError("compare trains both twins (frozen and unfrozen): drop frozen=false, or use `bvvlab train "
                         "frozen=false` for the unfrozen model alone")
    out = Path(cfg.out)
    results = {}
    for name, frozen in (("frozen", True), ("unfrozen", False)):
        twin = replace(cfg, frozen=frozen, out=str(out / name))  # keeps the explicit keys (a resume applies them)
        ckpt = train(twin)
        results[name] = {"checkpoint": str(ckpt), "metrics": read_metrics(twin.out)}
    fig = plots.training_curves({k: v["metrics"] for k, v in results.items()},
                                title=f"frozen vs unfrozen: {cfg.preset}, {cfg.steps} steps, seed {cfg.seed}")
    # plotly.min.js beside the html (checked before it is reused), so the figure draws offline
    fig_path = write_figure(fig, out / "compare.html")
    if figures is not None:  # a copy named after the whole out path (a/twins and b/twins must not collide)
        fig_path = write_figure(fig, ensure_dir(figures) / f"compare_{figure_slug(out)}.html")
    summary = {name: {"checkpoint": r["checkpoint"],
                      "final": json.loads((out / name / "meta.json").read_text()).get("final", {})}
               for name, r in results.items()}
    write_json_atomic(out / "compare.json", {"config": cfg, "figure": str(fig_path), "runs": summary})
    return out


def figure_slug(out: str | Path) -> str:
    """A file-name-safe name for a run directory from its whole path (relative to the working
    directory when inside it): `runs/a/twins` -> `runs_a_twins`."""
    import re

    path = Path(out).resolve()
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd().resolve())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.as_posix()).strip("_.") or "run"
