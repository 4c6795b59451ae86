"""`bvvlab grow`: stage-wise growth (bvvlab.train.growth); the training config of every stage as
`bvvlab train` takes it, the growth settings as a `GrowConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bvvlab.cli.train import add_train_arguments, run_config

# GrowConfig fields -> their flags here (the dest argparse gives them)
FLAGS = ("stages", "steps_per_stage", "from_checkpoint", "new_block_init", "finetune_steps", "lora_rank",
         "lora_alpha", "baseline", "baseline_compute")


def grow_config(args: argparse.Namespace) -> Any:
    """The GrowConfig of a command line (flags not given keep its defaults)."""
    from bvvlab.core.config import build
    from bvvlab.train.growth import GrowConfig

    return build(GrowConfig, **{k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})


def grow_run(cfg: Any, growth: Any) -> Path:
    """Grow with the TrainConfig `cfg` of every stage and the GrowConfig `growth`; the baselines
    asked for; growth.json. Returns the final checkpoint."""
    from bvvlab.core.atomic import write_json_atomic
    from bvvlab.core.config import replace
    from bvvlab.train import growth as G

    out = Path(cfg.out)
    steps = cfg.steps if growth.steps_per_stage is None else growth.steps_per_stage
    base = replace(cfg, resume=False, overwrite=False)
    s = G.grow(base, growth.stages, steps, out, growth.new_block_init, growth.from_checkpoint, growth.finetune_steps,
               lora_rank=growth.lora_rank, lora_alpha=growth.lora_alpha)
    if growth.baseline:
        total = sum(st["steps"] for st in s["stages"])
        s["baseline"] = G.baseline(base, s["stages"][-1]["depth"], total, out / "baseline", vocab=s["embedding"])
    if growth.baseline_compute:
        s["baseline_compute"] = G.compute_baseline(base, s, out / "baseline_compute")
    if growth.baseline or growth.baseline_compute:
        write_json_atomic(out / "growth.json", s)
    return Path(s["final"])


def _run(args: argparse.Namespace) -> int:
    growth = grow_config(args)  # a wrong growth setting is refused before the training config is read
    return run_config(lambda cfg: grow_run(cfg, growth), args)


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help,
                       description="Stage-wise growth: each stage adds blocks, trains them and the head, "
                                   "freezes what was trained before. Re-run the same command to resume.")
    add_train_arguments(p)
    p.add_argument("--stages", required=True, help="blocks added per stage, e.g. 1,1,1")
    p.add_argument("--steps-per-stage", default=None, help="optimizer steps per stage (default: steps=)")
    p.add_argument("--from", dest="from_checkpoint", help="grow this checkpoint (run or step folder)")
    p.add_argument("--new-block-init", choices=("random", "copy"), default=None,
                   help="new blocks: seeded random, or a copy of the block below")
    p.add_argument("--finetune-steps", default=None, help="a final stage training all blocks")
    p.add_argument("--lora-rank", default=None, help="rank of a LoRA update of the frozen blocks in every stage "
                                                   "that has some (0 = none; default: lora_rank=)")
    p.add_argument("--lora-alpha", default=None, help="LoRA scale numerator: the update is (alpha / rank) B A "
                                                      "(default: the rank)")
    p.add_argument("--baseline", action="store_true", default=None,
                   help="also train the final depth from scratch for the same number of tokens (OUT/baseline)")
    p.add_argument("--baseline-compute", action="store_true", default=None,
                   help="also train the final depth from scratch for the same training FLOPs (OUT/baseline_compute)")
    p.set_defaults(func=_run)
