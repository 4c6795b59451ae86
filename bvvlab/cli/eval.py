"""`bvvlab eval CKPT [CKPT ...] --suite S --out DIR` (bvvlab.eval.runner), its values through
`EvalConfig`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

# EvalConfig fields set by an option of the same name (flags not given keep its defaults)
OPTIONS = ("checkpoints", "suite", "out", "limit", "runs", "sample", "batch", "bpc_chars", "seed", "device", "suite_dir",
           "tokenisation")


def eval_config(args: argparse.Namespace) -> Any:
    """The EvalConfig of a command line."""
    from bvvlab.core.config import build
    from bvvlab.eval.runner import EvalConfig

    values = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    return build(EvalConfig, **values, protocol=args.protocol, trust_remote_code=args.trust_remote_code,
                 overwrite=args.overwrite)


def _run(args: argparse.Namespace) -> int:
    from bvvlab.eval import runner as R

    cfg = eval_config(args)
    protocol = cfg.suite == "paper" or cfg.protocol
    runs = cfg.protocol_runs
    sample = cfg.sample if cfg.sample is not None else runs > 1
    R.check_out(cfg.out, cfg.overwrite, cfg.checkpoints)  # before any work
    tasks, bpc = R.resolve_suite(cfg.suite, cfg.suite_dir, cfg.limit)
    models = R.load_models(cfg.checkpoints, cfg.device, cfg.trust_remote_code)
    warnings = R.heldout_warnings(cfg.checkpoints, tasks)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    rows = R.evaluate_models(models, tasks, bpc=bpc, runs=runs, sample=sample, protocol=protocol, limit=cfg.limit,
                             batch=cfg.batch, bpc_chars=cfg.bpc_chars, seed=cfg.seed,
                             tokenisation=cfg.tokenisation)
    out = R.write_report(rows, cfg.out, {"suite": cfg.suite, "checkpoints": [str(p) for p in cfg.checkpoints],
                                         "runs": runs, "sample": sample, "limit": cfg.limit,
                                         "tokenisation": cfg.tokenisation, "warnings": warnings},
                       overwrite=cfg.overwrite)
    print(R.markdown_table(rows), end="")
    print(f"wrote {out}/results.json, results.md, results.html")
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.eval import runner

    p = sub.add_parser(name, help=help, description=runner.__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="run folders, checkpoint folders, fused checkpoints (FUSED::EXPERT: one "
                                                  "expert alone) or Hugging Face causal LM directories (several: one "
                                                  "comparison)")
    p.add_argument("--suite", default=None, help="offline | paper | comma list of tasks, bpc, NAME=PATH, files")
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, results.html): new or empty")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation at --out")
    p.add_argument("--limit", default=None, help="at most this many questions per task")
    p.add_argument("--runs", default=None, help="protocol runs (default: 10 for paper, else 1)")
    p.add_argument("--sample", action=argparse.BooleanOptionalAction, default=None,
                   help="sample with the card's settings (default: when runs > 1), else greedy")
    p.add_argument("--protocol", action="store_true", help="also run the generative letter protocol on mc tasks")
    p.add_argument("--batch", default=None, help="questions per forward")
    p.add_argument("--tokenisation", choices=("split", "joint"), default=None,
                   help="multiple choice: split (context and choice apart, default) or joint "
                        "(as lm-evaluation-harness)")
    p.add_argument("--bpc-chars", default=None, help="held-out characters per language for bits/char")
    p.add_argument("--seed", default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a Hugging Face folder run the Python code it ships (auto_map); never needed for bvvlab's")
    p.add_argument("--suite-dir", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
