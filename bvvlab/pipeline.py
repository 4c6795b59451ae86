"""`bvvlab demo`: the workbench's pipeline on the embedded default data, end to end on a CPU.

Stages (each one a library call; the same ones the notebooks make):
1. glyph embedding: the compact vocabulary of the embedded corpora, rows from the full
   bvv241-2-3 matrix (recipe sections 2-3) -> `OUT/embedding/`;
2. frozen vs unfrozen twins of the `tiny` preset, same seed, data order and schedule, on a mix
   of LibreOffice en-ru help text, the concept corpus and ~10% instruction infusion
   -> `OUT/compare/{frozen,unfrozen}/` (run folders, each also a Hugging Face model dir) and
   `OUT/compare/compare.html` (a copy in a figures folder only when asked: `--figures DIR`);
3. a summary (`OUT/summary.json`): validation bits per character of both twins.
Later issues add probing, evaluation, fusion and growth stages here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from bvvlab.atomic import ensure_dir, write_json_atomic
from bvvlab.runinfo import run_meta

DEMO_CORPUS = {"libreoffice-en-ru": 0.6, "concepts": 0.3, "instructions": 0.1}


# ---------------------------------------------------------------------------------------------
# frozen vs unfrozen


def figure_slug(out: str | Path) -> str:
    """A file-name-safe name for a run directory from its whole path (relative to the working
    directory when inside it): `runs/a/twins` -> `runs_a_twins`."""
    path = Path(out).resolve()
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd().resolve())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.as_posix()).strip("_.") or "run"


def compare(cfg: Any, figures: str | Path | None = None) -> Path:
    """Train the frozen and the unfrozen twin (same seed, data order, schedule) under `cfg.out`
    (`frozen/`, `unfrozen/`), write overlaid curves to `cfg.out/compare.html` and `compare.json`;
    with `figures=DIR` also a copy `DIR/compare_<slug of cfg.out>.html`. Returns `cfg.out`."""
    from bvvlab import plots
    from bvvlab.train import read_metrics, train

    if not cfg.frozen and "frozen" in (cfg._explicit or ()):
        raise ValueError("compare trains both twins (frozen and unfrozen): drop frozen=false, or use `bvvlab train "
                         "frozen=false` for the unfrozen model alone")
    out = Path(cfg.out)
    results = {}
    for name, frozen in (("frozen", True), ("unfrozen", False)):
        twin = dataclasses.replace(cfg, frozen=frozen, out=str(out / name))
        twin._explicit = None if cfg._explicit is None else cfg._explicit | {"frozen", "out"}
        ckpt = train(twin)
        results[name] = {"checkpoint": str(ckpt), "metrics": read_metrics(twin.out)}
    fig = plots.training_curves({k: v["metrics"] for k, v in results.items()},
                                title=f"frozen vs unfrozen: {cfg.preset}, {cfg.steps} steps, seed {cfg.seed}")
    # "directory": plotly.min.js is written once beside the html, so the figure draws offline
    fig.write_html(out / "compare.html", include_plotlyjs="directory")
    fig_path = out / "compare.html"
    if figures is not None:  # a copy named after the whole out path (a/twins and b/twins must not collide)
        fig_path = ensure_dir(figures) / f"compare_{figure_slug(out)}.html"
        fig.write_html(fig_path, include_plotlyjs="directory")
    summary = {name: {"checkpoint": r["checkpoint"],
                      "final": json.loads((out / name / "meta.json").read_text()).get("final", {})}
               for name, r in results.items()}
    write_json_atomic(out / "compare.json", {"config": cfg, "figure": str(fig_path), "runs": summary})
    return out


# ---------------------------------------------------------------------------------------------
# the demo


def demo(out: str | Path = "runs/demo", steps: int = 200, seed: int = 0) -> dict[str, Any]:
    from bvvlab import embeddings, train

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "demo.json").exists():
        raise FileExistsError(f"{out} holds something other than an earlier demo: pass another --out "
                              "(the demo replaces only its own earlier output)")
    write_json_atomic(out / "demo.json", {"what": "bvvlab demo output; replaced by the next demo run"})
    t0 = time.perf_counter()
    embedded = embeddings.prepare_vocabulary("compact", corpus=list(DEMO_CORPUS), dim=train.model_dim(train.make_config(preset="tiny")))
    embedded.save(out / "embedding", overwrite=True)
    t_embed = time.perf_counter() - t0
    # both twins use this one embedding dir: same tokenizer, same (frozen or initial) rows
    cfg = train.make_config(preset="tiny", steps=steps, seed=seed, corpus=dict(DEMO_CORPUS),
                            vocab=str(out / "embedding"), train_chars=2_000_000, out=str(out / "compare"),
                            overwrite=True)
    compare(cfg)
    report = json.loads((out / "compare" / "compare.json").read_text(encoding="utf-8"))
    summary = run_meta(cfg, stage_seconds={"embedding": round(t_embed, 1), "total": round(time.perf_counter() - t0, 1)},
                       vocab_size=len(embedded.tokenizer), matrix_hash=embedded.matrix_hash,
                       results={k: v["final"] for k, v in report["runs"].items()}, figure=report["figure"])
    write_json_atomic(out / "summary.json", summary)
    return summary


def add_cli(subparsers: Any) -> None:
    from bvvlab.train import _run_cli, add_common

    c = subparsers.add_parser("compare", help="train frozen and unfrozen twins and plot their curves",
                              description="Frozen vs unfrozen twins under --out; curves in --out/compare.html.")
    add_common(c)
    c.add_argument("--figures", help="also copy the figure into this folder (e.g. figures/)")
    c.set_defaults(func=lambda a: _run_cli(lambda cfg: compare(cfg, figures=a.figures), a))
    p = subparsers.add_parser("demo", help="run the pipeline on the embedded default data (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="output directory (an earlier demo there is replaced; anything else is refused)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per twin")
    p.add_argument("--seed", type=int, default=0)

    def run(args: Any) -> int:
        s = demo(args.out, steps=args.steps, seed=args.seed)
        print(f"vocab {s['vocab_size']} tokens, matrix {s['matrix_hash'][:12]}; "
              f"{s['stage_seconds']['total']} s; figure {s['figure']}")
        for name, final in s["results"].items():
            print(f"{name:9s} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))
        return 0

    p.set_defaults(func=run)
