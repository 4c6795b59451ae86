"""The pipeline's plan before anything runs (`bvvlab pipeline --dry-run`): parameter counts,
tokens and a memory estimate per GPU for every step, and the torchrun line of each node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bvvlab.app.pipeline import (
    Step,
    notebook_parameters,
    notebooks_dir,
    torchrun_cmd,
    train_config,
)
from bvvlab.core.atomic import write_json_atomic


def _vocab_size(vocab: str, preset: str) -> int:
    from bvvlab.glyph.tokenizer import VOCAB_KINDS
    from bvvlab.models import model as M

    return VOCAB_KINDS[vocab].size if vocab in VOCAB_KINDS else int(M.PRESETS[preset]["vocab_size"])


def estimate(preset: str, vocab: str, frozen: bool, seq_len: int, batch_size: int, grad_accum: int = 1,
             steps: int = 0, gpus: int = 1, train: bool = True, runs: int = 1, layers: int | None = None
             ) -> dict[str, Any]:
    """Parameter counts (meta device: no memory), tokens, and a memory estimate per GPU.

    `batch_size` is the trainer's: windows per optimizer step over all ranks and accumulation
    micro-steps, so tokens = steps x seq_len x batch_size (x `runs` models trained) and one
    micro-batch holds batch_size / (grad_accum x gpus) windows. Memory: fp32 weights (4 B per
    parameter, the frozen matrix included); when training also fp32 gradients + AdamW's two
    moments (12 B per trainable parameter) and the activations of one micro-batch at bf16
    without recomputation, s*b*h*34 bytes per layer (Korthikanti et al. 2022, with fused/flash
    attention so the s^2 term is absent), plus the chunked loss's logits (256 tokens x vocab x
    4 B); for inference (scoring, probing, generation) the logits of a batch of windows
    (s*b*vocab*4 B); with FSDP (`memory_per_gpu_fsdp`) see bvvlab.train.memory. An estimate for
    planning, not a measurement."""
    from bvvlab.models import model as M
    from bvvlab.train.memory import memory_per_gpu, model_counts

    extra = {} if layers is None else {"num_hidden_layers": layers}
    cfg = M.config_from_preset(preset, vocab_size=_vocab_size(vocab, preset), frozen_embedding=frozen, **extra)
    counts, block = model_counts(cfg)
    gb = 1024 ** 3
    weights = 4 * counts["total"]
    mem = {"weights_gb": round(weights / gb, 2)}
    micro = max(1, batch_size // max(1, grad_accum * gpus))
    fsdp = None
    if train:
        mem = memory_per_gpu(cfg, counts, seq_len, micro, gpus)
        fsdp = memory_per_gpu(cfg, counts, seq_len, micro, gpus, fsdp=True, block_params=block)
    else:
        logits = seq_len * batch_size * cfg.vocab_size * 4
        mem.update(logits_gb=round(logits / gb, 2), total_gb=round((weights + logits) / gb, 2))
    return {"parameters": counts, "tokens": steps * seq_len * batch_size * runs if train else 0,
            "micro_batch": micro, "memory_per_gpu": mem, "memory_per_gpu_fsdp": fsdp, "gpus": gpus,
            "shape": f"{cfg.num_hidden_layers} layers x {cfg.hidden_size}, vocab {cfg.vocab_size:,}"}


def dry_run(steps: list[Step], out: Path, gpus: int = 1, nnodes: int = 1) -> list[dict[str, Any]]:
    """The plan: per step its notebook, parameters, the estimate (training steps: parameters,
    tokens, memory; the others: the model they load) and, with gpus > 1 or nnodes > 1, the
    torchrun command line of each node. Nothing is written."""
    rows, twin = [], None
    for s in steps:
        row: dict[str, Any] = {"step": s.name, "notebook": s.notebook, "params": s.params, "needs": list(s.needs)}
        p = {**notebook_parameters(notebooks_dir() / s.notebook), **s.params}  # the notebook's defaults beneath
        if s.train_run:
            cfg = train_config(s, out)
            cfg.validate(world_size=gpus * nnodes)
            twin = cfg
            from bvvlab.train.config import interface_kind

            row["estimate"] = estimate(cfg.preset, cfg.vocab, interface_kind(cfg) != "trainable", cfg.seq_len,
                                       cfg.batch_size, cfg.grad_accum, cfg.steps, gpus * nnodes)
            if gpus > 1 or nnodes > 1:
                row["launch"] = node_lines(Path(s.folder) / "train_config.json", out, gpus, nnodes)
        elif s.group == "fusion":  # two experts, each trained on its own data
            row["estimate"] = estimate(p["preset"], "compact", True, p["seq_len"], p["batch_size"], 1, p["steps"], runs=2)
        elif s.group == "growth":  # the stages' tokens (each baseline trains about as many again)
            depth = sum(int(x) for x in str(p["stages"]).split(",") if x.strip())
            n = len([x for x in str(p["stages"]).split(",") if x.strip()])
            row["estimate"] = estimate(p["preset"], "compact", True, p["seq_len"], p["batch_size"], 1,
                                       p["steps_per_stage"] * n, layers=depth)
        elif s.group == "interfaces":  # every interface of the series, every seed
            runs = len(str(p["series"]).split(",")) * len(str(p["seeds"]).split(","))
            row["estimate"] = estimate(p["preset"], "compact", True, p["seq_len"], p["batch_size"], 1, p["steps"],
                                       runs=runs)
        elif twin is not None and s.needs:  # evaluation, probing, generation load the twins
            row["estimate"] = estimate(twin.preset, twin.vocab, True, twin.seq_len,
                                       1 if s.group == "generate" else 8, train=False)
        rows.append(row)
    return rows


def format_dry_run(rows: list[dict[str, Any]], profile: str, out: Path) -> str:
    lines = [f"pipeline {profile} -> {out} (dry run: nothing is written)"]
    width = max([15] + [len(r["step"]) for r in rows])  # train-unfrozen-seedN with --seeds
    for i, r in enumerate(rows, 1):
        params = ", ".join(f"{k}={v!r}" for k, v in r["params"].items())
        lines.append(f"{i}. {r['step']:<{width}} {r['notebook']:<22} {params}")
        if "estimate" in r:
            e = r["estimate"]
            c, m = e["parameters"], e["memory_per_gpu"]
            tokens = f"{e['tokens']:,} training tokens (micro-batch {e['micro_batch']}); " if e["tokens"] else ""
            lines.append(f"   model {e['shape']}: {c['total']:,} parameters ({c['trainable']:,} trainable, "
                         f"{c['frozen']:,} frozen); {tokens}memory per GPU ~{m['total_gb']} GiB "
                         f"({', '.join(f'{k[:-3]} {v}' for k, v in m.items() if k != 'total_gb')} GiB)")
            if e.get("memory_per_gpu_fsdp"):
                f = e["memory_per_gpu_fsdp"]
                lines.append(f"   with fsdp=true over {e['gpus']} GPU(s): ~{f['total_gb']} GiB each "
                             f"({', '.join(f'{k[:-3]} {v}' for k, v in f.items() if k != 'total_gb')} GiB)")
        for launch in r.get("launch", []):
            lines.append(f"   launch: {launch}")
    return "\n".join(lines)


def node_lines(config: Path, out: Path, gpus: int, nnodes: int) -> list[str]:
    """The command of each node (one line for one node): on several nodes, first the shards
    (`bvvlab data prepare`, once on shared storage), then torchrun with a static rendezvous at
    node 0 ($MASTER_ADDR, e.g. the first host of a Slurm allocation; docs/cluster.md)."""
    if nnodes <= 1:
        return [f"(in {out}) " + " ".join(torchrun_cmd(config, gpus))]
    lines = [f"data (once, before): (in {out}) bvvlab data prepare --config {config}"]
    for r in range(nnodes):
        lines.append(f"node {r}: (in {out}) torchrun --nnodes={nnodes} --node-rank={r} --nproc_per_node={gpus} "
                     f"--rdzv-endpoint=$MASTER_ADDR:29500 -m bvvlab train --config {config}")
    return lines


def write_node_configs(steps: list[Step], out: Path, gpus: int, nnodes: int) -> list[str]:
    """`--nnodes N`: write each training step's train_config.json and return the per-node lines;
    the nodes' agents are launched by the user (or sbatch), not by this process."""
    from bvvlab.core.atomic import to_jsonable

    lines = []
    for s in steps:
        if s.train_run:
            cfg = train_config(s, Path())
            cfg.validate(world_size=gpus * nnodes)
            config = out / s.folder / "train_config.json"
            write_json_atomic(config, to_jsonable(dataclasses.asdict(cfg)))
            lines += [f"{s.name}:"] + [f"  {x}" for x in node_lines(config.relative_to(out), out, gpus, nnodes)]
    return lines


