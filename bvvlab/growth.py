"""Layer-wise growth on the frozen substrate (docs/recipe.md section 6), floor 6.

The second paper grows a model a few blocks at a time on the frozen glyph embedding: each
stage adds new blocks on top, trains only them and the head (the blocks below stay frozen),
and the next stage starts from the result. No trainer was published; this one is the ordinary
trainer run once per stage:

    stage k: model.num_hidden_layers = depth_k, init_from = stage k-1's run folder,
             freeze_blocks = depth_(k-1), new blocks random (seeded) or copies of the block below

so every stage is an ordinary run folder (`OUT/stage_K/`: a Hugging Face model directory with
checkpoints, metrics and meta.json recording `init` (parent checkpoint, new blocks, how they were
initialised) and `frozen_blocks`), resumes exactly like any run (mid-stage from its last
checkpoint; a finished stage is skipped), and loads anywhere a checkpoint does. All stages and the
baseline share one saved embedding (`OUT/embedding/`), so they share tokenizer and frozen matrix.

`baseline()` trains the final depth from scratch (all blocks, same data) for the same number of
tokens: the comparison the growth claim needs. `OUT/growth.json` sums it up per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from bvvlab import checkpoints as C
from bvvlab.atomic import ensure_dir, write_json_atomic
from bvvlab.train import read_metrics, train
from bvvlab.train_config import TrainConfig, make_config


def parse_stages(stages: str | Sequence[int]) -> list[int]:
    """"1,1,1" or [1, 1, 1] -> blocks added per stage (each >= 1)."""
    try:
        out = [int(s) for s in (stages.split(",") if isinstance(stages, str) else stages)]
    except ValueError:
        raise ValueError(f"stages={stages!r}: give blocks per stage as integers, e.g. --stages 1,1,1") from None
    if not out or any(n < 1 for n in out):
        raise ValueError(f"stages={stages!r}: every stage adds at least one block, e.g. --stages 1,1,1")
    return out


def _steps(steps: int | Sequence[int], n: int) -> list[int]:
    out = [int(steps)] * n if isinstance(steps, int) else [int(s) for s in steps]
    if len(out) != n or any(s < 1 for s in out):
        raise ValueError(f"steps={steps!r}: one positive step count for all {n} stages, or one per stage")
    return out


def _holds_run(d: Path) -> bool:
    return (d / "meta.json").exists() or (d / "checkpoints").exists()


def shared_embedding(base: TrainConfig, out: Path) -> str:
    """The embedding every stage uses: `base.vocab` when it is a saved embedding, else one built
    for the base config once and saved under `out/embedding` (kept across resumes)."""
    from bvvlab import data as D
    from bvvlab.build import prepare_embedded

    if (Path(base.vocab) / "glyph_matrix.safetensors").exists():
        return base.vocab
    emb = out / "embedding"
    if not (emb / "glyph_matrix.safetensors").exists():
        texts = None
        if base.vocab == "compact":
            weights = D.normalize_weights(base.corpus)
            budget = D.resolve_max_chars(weights, "train", base.train_chars, base.seed)
            texts = list(D.take_chars(D.iter_texts(weights, "train", base.seed), budget))
        prepare_embedded(base, texts).save(emb, overwrite=True)
    return str(emb)


def _stage_record(run: Path, depth: int, added: int, frozen: int, steps: int) -> dict[str, Any]:
    recs = read_metrics(run)
    train_recs = [r for r in recs if r["kind"] == "train"]
    final = C.read_meta(run).get("final", {})
    return {"run": str(run), "checkpoint": str(C.resolve(run)), "depth": depth, "new_blocks": added,
            "frozen_blocks": frozen, "steps": steps, "tokens": final.get("tokens_seen"),
            "first_loss": train_recs[0]["loss"] if train_recs else None,
            "last_loss": train_recs[-1]["loss"] if train_recs else None,
            "val_bpc": final.get("val_bpc"), "init": C.read_meta(run).get("init")}


def grow(base: TrainConfig, stages: str | Sequence[int], steps: int | Sequence[int], out: str | Path,
         new_block_init: str = "random", from_checkpoint: str | None = None, finetune_steps: int = 0,
         callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Grow a model stage by stage under `out` (see the module docstring); returns growth.json's
    content. Re-running the same call resumes: finished stages are skipped, an interrupted stage
    continues from its last checkpoint. `from_checkpoint` grows an existing model (its blocks
    are the first frozen ones; `base.vocab` must be the embedding it was trained with)."""
    plan = parse_stages(stages)
    per_stage = _steps(steps, len(plan))
    if finetune_steps < 0:
        raise ValueError(f"finetune_steps={finetune_steps}: must be >= 0")
    out = ensure_dir(out)
    parent: str | None = None
    depth = 0
    if from_checkpoint:
        parent = str(C.resolve(from_checkpoint))
        depth = int(json.loads((Path(parent) / "config.json").read_text())["num_hidden_layers"])
    if from_checkpoint and not (Path(base.vocab) / "glyph_matrix.safetensors").exists():
        raise ValueError("--from needs vocab= the saved embedding folder the checkpoint was trained with (a "
                         "vocabulary rebuilt from text could differ; the matrix hash is checked)")
    vocab = shared_embedding(base, out)
    summary: dict[str, Any] = {"stages": [], "plan": plan, "steps": per_stage, "new_block_init": new_block_init,
                               "from": parent, "embedding": vocab}

    def run(name: str, depth: int, frozen: int, steps: int, init_from: str | None) -> Path:
        d = out / name
        cfg = make_config(base, **{"model.num_hidden_layers": depth}, steps=steps, vocab=vocab, out=str(d),
                          init_from=init_from, freeze_blocks=frozen, new_block_init=new_block_init,
                          resume=_holds_run(d), overwrite=False)
        train(cfg, callback=callback)  # a finished stage returns at once (after the resume checks of its config)
        return d

    for k, (added, steps_k) in enumerate(zip(plan, per_stage), start=1):
        frozen, depth = depth, depth + added
        d = run(f"stage_{k}", depth, frozen, steps_k, parent)
        summary["stages"].append({"stage": k, **_stage_record(d, depth, added, frozen, steps_k)})
        parent = str(d)
    if finetune_steps:
        d = run("finetune", depth, 0, finetune_steps, parent)
        summary["finetune"] = _stage_record(d, depth, 0, 0, finetune_steps)
    summary["final"] = str(C.resolve(parent))
    write_json_atomic(out / "growth.json", summary)
    return summary


def baseline(base: TrainConfig, depth: int, steps: int, out: str | Path, vocab: str | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The monolithic comparison: `depth` blocks trained together from scratch for `steps` steps
    (same batch and sequence length as the growth stages: the same number of tokens when `steps`
    is their sum), on the same embedding."""
    out = Path(out)
    vocab = vocab or shared_embedding(base, out.parent)
    cfg = make_config(base, **{"model.num_hidden_layers": depth}, steps=steps, vocab=vocab, out=str(out),
                      resume=_holds_run(out), overwrite=False)
    train(cfg, callback=callback)
    return _stage_record(out, depth, depth, 0, steps)


def add_cli(subparsers: Any) -> None:
    from bvvlab.train import _run_cli, add_common

    p = subparsers.add_parser("grow", help="grow a model layer by layer on the frozen substrate",
                              description="Stage-wise growth: each stage adds blocks, trains them and the head, "
                                          "freezes what was trained before. Re-run the same command to resume.")
    add_common(p)
    p.add_argument("--stages", required=True, help="blocks added per stage, e.g. 1,1,1")
    p.add_argument("--steps-per-stage", type=int, default=None, help="optimizer steps per stage (default: steps=)")
    p.add_argument("--from", dest="from_checkpoint", help="grow this checkpoint (run or step folder)")
    p.add_argument("--new-block-init", choices=("random", "copy"), default="random",
                   help="new blocks: seeded random, or a copy of the block below")
    p.add_argument("--finetune-steps", type=int, default=0, help="a final stage training all blocks")
    p.add_argument("--baseline", action="store_true",
                   help="also train the final depth from scratch for the same number of tokens (OUT/baseline)")

    def grow_cli(cfg: TrainConfig) -> Path:
        out = Path(cfg.out)
        steps = p_args.steps_per_stage or cfg.steps
        base = dataclasses.replace(cfg, resume=False, overwrite=False)
        base._explicit = cfg._explicit
        s = grow(base, p_args.stages, steps, out, p_args.new_block_init, p_args.from_checkpoint,
                 p_args.finetune_steps)
        if p_args.baseline:
            total = sum(st["steps"] for st in s["stages"])
            s["baseline"] = baseline(base, s["stages"][-1]["depth"], total, out / "baseline", vocab=s["embedding"])
            write_json_atomic(out / "growth.json", s)
        return Path(s["final"])

    def run(args: argparse.Namespace) -> int:
        nonlocal p_args
        p_args = args
        return _run_cli(grow_cli, args)

    p_args: argparse.Namespace = argparse.Namespace()
    p.set_defaults(func=run)
