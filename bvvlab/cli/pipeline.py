"""`bvvlab pipeline` and `bvvlab demo`: the notebooks in order (bvvlab.app.pipeline), its values
through `PipelineConfig`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

# PipelineConfig fields set by an option of the same name (options not given keep its defaults)
OPTIONS = ("profile", "out", "set", "only", "gpus", "nnodes", "notebooks", "progress", "seeds")


def pipeline_config(args: argparse.Namespace) -> Any:
    from bvvlab.app.pipeline import PipelineConfig
    from bvvlab.core.config import build

    values = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    return build(PipelineConfig, **values, dry_run=args.dry_run)


def summary_lines(state: dict[str, Any]) -> list[str]:
    """One line per step: its status, seconds, the failed cell and the error."""
    lines, width = [], max([15] + [len(n) for n in state["steps"]])
    for name, rec in state["steps"].items():
        extra = f" {rec['seconds']} s" if rec.get("seconds") is not None and rec["status"] != "cached" else ""
        where = f" (cell In [{rec['cell']}])" if rec.get("cell") is not None else ""
        err = f": {rec['error']}" if rec.get("error") else ""
        lines.append(f"  {name:<{width}} {rec['status']}{extra}{where}{err}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from bvvlab.app import dryrun as DR
    from bvvlab.app import pipeline as PL
    from bvvlab.core.errors import Interrupted

    cfg = pipeline_config(args)
    overrides = PL.parse_sets(cfg.set)
    out = Path(cfg.out) if cfg.out else PL.default_out(cfg.profile)
    if cfg.dry_run:
        steps = PL.plan(cfg.profile, overrides, cfg.notebooks, cfg.only, cfg.seeds)
        print(DR.format_dry_run(DR.dry_run(steps, out, cfg.gpus, cfg.nnodes), cfg.profile, out))
        return 0
    if cfg.nnodes > 1:  # the nodes run torchrun themselves; then the same command without --nnodes reports
        lines = DR.write_node_configs(PL.plan(cfg.profile, overrides, cfg.notebooks, cfg.only, cfg.seeds), out, cfg.gpus,
                                      cfg.nnodes)
        print("\n".join([f"pipeline {cfg.profile} on {cfg.nnodes} nodes: run on each node (docs/cluster.md):",
                         *lines, "then, when they are done: bvvlab pipeline --profile "
                         f"{cfg.profile} --out {out} (it finds the finished runs and reports them)"]))
        return 0
    again = shlex.join(["bvvlab", "pipeline", "--profile", cfg.profile, "--out", str(out)]
                       + [f"--set={x}" for x in cfg.set] + ([f"--only={args.only}"] if args.only else [])
                       + ([f"--gpus={cfg.gpus}"] if cfg.gpus != 1 else [])
                       + ([f"--seeds={args.seeds}"] if args.seeds else [])
                       + ([f"--notebooks={cfg.notebooks}"] if cfg.notebooks else []))
    try:
        state = PL.run(cfg.profile, out, overrides, cfg.only, cfg.gpus, progress=cfg.progress, nb_dir=cfg.notebooks,
                       seeds=cfg.seeds)
    except Interrupted as exc:  # SIGINT 130, SIGTERM 143, as bvvlab train
        import signal

        # the run is saved and recorded: a second, impatient signal while this process exits must
        # not turn the exit code into a death by signal (the pipeline's own handlers are gone now)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        print(f"bvvlab pipeline: interrupted; finished steps are kept in {out}; continue with: {again}",
              file=sys.stderr)
        return exc.exit_code
    print("\n".join([f"pipeline {cfg.profile}: {out} ({state['seconds']} s)"] + summary_lines(state)))
    failed = [n for n, r in state["steps"].items() if r["status"] == "failed"]
    print(f"report: {out / 'report.html'}")
    if failed:
        r = state["steps"][failed[0]]
        cell = "" if r.get("cell") is None else f" cell In [{r['cell']}]"
        print(f"bvvlab pipeline: error: step {failed[0]} failed in {r['notebook']}{cell}: {r.get('error')}; its notebook is "
              f"{out / r.get('executed', '')}; earlier steps are kept; fix it and run again: {again}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    if name == "demo":
        d = sub.add_parser(name, help=help, description="bvvlab pipeline --profile demo")
        d.add_argument("--out", default="runs/demo", help="run folder (a re-run skips finished steps)")
        d.set_defaults(func=_run, profile="demo", set=None, only=None, gpus=None, nnodes=None, dry_run=False,
                       notebooks=None, progress=None, seeds=None)
        return
    from bvvlab.app import pipeline as PL

    p = sub.add_parser(name, help=help, description=PL.__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=None, help=f"one of {', '.join(PL.PROFILES)} (default smoke)")
    p.add_argument("--out", help="run folder (default runs/<profile>-<time>); the same --out continues a run")
    p.add_argument("--set", action="append", metavar="STEP.PARAM=VALUE",
                   help="override a notebook parameter (JSON value), e.g. --set train.steps=50 --set probe.umap=false")
    p.add_argument("--only", help="comma-separated steps (with the steps they read from)")
    p.add_argument("--seeds", default=None,
                   help="train the frozen and trainable twins once per seed, e.g. 0,1,2: the report's "
                        "frozen-vs-trainable gap gets an interval over seeds (default: once)")
    p.add_argument("--gpus", default=None, help="GPUs for the training steps (> 1: torchrun); per node")
    p.add_argument("--nnodes", default=None,
                   help="nodes for the training steps (> 1: write the configs, print each node's torchrun line)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, parameter counts, tokens and memory; run nothing")
    p.add_argument("--notebooks", help="folder of the notebooks (default: the checkout's notebooks/)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.set_defaults(func=_run)
