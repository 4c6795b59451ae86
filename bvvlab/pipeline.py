"""`bvvlab demo`: the workbench's pipeline on the embedded default data, end to end on a CPU.

Stages (each one a library call; the same ones the notebooks make):
1. glyph embedding: the compact vocabulary of the embedded corpora, rows from the full
   bvv241-2-3 matrix (recipe sections 2-3) -> `OUT/embedding/`;
2. frozen vs unfrozen twins of the `tiny` preset, same seed, data order and schedule, on a mix
   of LibreOffice en-ru help text, the concept corpus and ~10% instruction infusion
   -> `OUT/compare/{frozen,unfrozen}/` (Hugging Face checkpoint dirs) and `figures/`;
3. a summary (`OUT/summary.json`): validation bits per character of both twins.
Later issues add probing, evaluation, fusion and growth stages here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bvvlab.runinfo import run_meta, write_json_atomic

DEMO_CORPUS = {"libreoffice-en-ru": 0.6, "concepts": 0.3, "instructions": 0.1}


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
    train.compare(cfg)
    report = json.loads((out / "compare" / "compare.json").read_text(encoding="utf-8"))
    summary = run_meta(cfg, stage_seconds={"embedding": round(t_embed, 1), "total": round(time.perf_counter() - t0, 1)},
                       vocab_size=len(embedded.tokenizer), matrix_hash=embedded.matrix_hash,
                       results={k: v["final"] for k, v in report["runs"].items()}, figure=report["figure"])
    write_json_atomic(out / "summary.json", summary)
    return summary


def add_cli(subparsers: Any) -> None:
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
