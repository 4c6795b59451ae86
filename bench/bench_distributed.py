"""Several processes on one CPU machine (issue 27), Gloo:

1. Loss curves of the same run (same global batch) as 1 process, as 2 node ranks of
   `torchrun --nnodes 2` on localhost, as DDP on 2 ranks and as FSDP (`fsdp=true`) on 2 ranks:
   the largest relative difference from the 1-process curve (the tests' tolerance is 1e-5).
2. Memory per rank, DDP against FSDP at the same shape: the bytes of parameters, gradients and
   AdamW state each rank holds after one step (local shards for FSDP; the frozen matrix buffer
   counted), and each rank's peak RSS. Measured inside `torchrun --nproc_per_node 2` runs of
   this file (`--worker`), at `--preset` (default small: 7.3 M parameters, 5.2 M trainable).

    nice -n 10 .venv/bin/python bench/bench_distributed.py [--steps 30] [--preset small]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = dict(preset="tiny", seq_len=64, batch_size=8, log_every=1, eval_every=0, eval_batches=1,
              train_chars=40_000, val_chars=4_000, warmup=3, lr=3e-3, progress=False)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_args(out: Path, vocab: str, steps: int, *extra: str) -> list[str]:
    return ["train", "--out", str(out), f"vocab={vocab}", f"steps={steps}", f"save_every={steps}",
            *[f"{k}={v}" for k, v in COMMON.items()], *extra]


def _run(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        if p.returncode:
            raise SystemExit(err[-3000:])
    return time.perf_counter() - t0


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == "train"]


def curves(tmp: Path, vocab: str, steps: int) -> dict:
    py, run = [sys.executable], [sys.executable, "-m", "torch.distributed.run"]
    port = _port()
    nodes = [[*run, "--nnodes", "2", "--node-rank", str(r), "--nproc_per_node", "1", "--rdzv-endpoint",
              f"localhost:{port}", "-m", "bvvlab", *_train_args(tmp / "nodes", vocab, steps)] for r in (0, 1)]
    runs = {"one": [[*py, "-m", "bvvlab", *_train_args(tmp / "one", vocab, steps)]],
            "two_nodes": nodes,
            "ddp2": [[*run, "--standalone", "--nproc_per_node", "2", "-m", "bvvlab",
                      *_train_args(tmp / "ddp2", vocab, steps)]],
            "fsdp2": [[*run, "--standalone", "--nproc_per_node", "2", "-m", "bvvlab",
                       *_train_args(tmp / "fsdp2", vocab, steps, "fsdp=true")]]}
    out: dict = {"steps": steps, **{k: v for k, v in COMMON.items() if k != "progress"}}
    folder = {"one": "one", "two_nodes": "nodes", "ddp2": "ddp2", "fsdp2": "fsdp2"}
    for name, cmds in runs.items():
        secs = _run(cmds)
        out[name] = {"wall_s": secs, "losses": _losses(tmp / folder[name])}
    ref = out["one"]["losses"]
    for name in ("two_nodes", "ddp2", "fsdp2"):
        got = out[name]["losses"]
        out[name]["max_rel_diff_vs_one"] = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
    return out


def worker(preset: str, fsdp: bool, vocab: str) -> None:
    """Under torchrun: the trainer's model, wrapping and optimizer; one step; bytes held per rank."""
    import torch
    import torch.distributed as dist

    from bvvlab.glyph import embeddings as E
    from bvvlab.train import loop as TR
    from bvvlab.train import sharded

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    cfg = TR.make_config(preset=preset, vocab=vocab, fsdp=fsdp)
    model = TR.build_model(cfg, E.load_embedded(vocab))
    fwd = model
    if fsdp:
        sharded.shard(model)
    else:
        fwd = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    opt = TR.make_optimizer(model, cfg, torch.device("cpu"), fused=not fsdp)
    x = torch.randint(0, model.config.vocab_size, (4, 128))
    TR.train_step(fwd, [p for p in model.parameters() if p.requires_grad], opt, x, 1, 1.0,
                  world=dist.get_world_size(), ddp=None if fsdp else fwd)
    if fsdp:
        sharded.reshard(model)

    def local(t):
        return t._local_tensor if hasattr(t, "_local_tensor") else t

    params = sum(local(p).numel() * local(p).element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    adam = sum(local(v).numel() * local(v).element_size() for s in opt.state.values() for v in s.values()
               if torch.is_tensor(v) and local(v).dim() > 0)
    rec = {"rank": dist.get_rank(), "params_mb": params / 2**20, "buffers_mb": buffers / 2**20,
           "grads_mb": params / 2**20, "adam_mb": adam / 2**20,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    rec["state_total_mb"] = rec["params_mb"] + rec["buffers_mb"] + rec["grads_mb"] + rec["adam_mb"]
    print("MEM " + json.dumps(rec), flush=True)
    dist.destroy_process_group()


def memory(preset: str, vocab: str) -> dict:
    out = {"preset": preset}
    for kind in ("ddp", "fsdp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               "--worker", kind, "--preset", preset, "--vocab", vocab]
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1200)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        out[kind] = sorted((json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("MEM ")),
                           key=lambda r: r["rank"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--worker", choices=["ddp", "fsdp"])
    ap.add_argument("--vocab")
    args = ap.parse_args()
    if args.worker:
        return worker(args.preset, args.worker == "fsdp", args.vocab)
    sys.path.insert(0, str(REPO))
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train import shards as D

    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    texts = list(D.take_chars(D.iter_texts({"libreoffice-en-ru": 1.0}, "train", 0), COMMON["train_chars"]))
    vocab = str(prepare_vocabulary("compact", dim=64, texts=texts, progress=False).save(tmp / "v64"))
    res = {"curves": curves(tmp, vocab, args.steps)}
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "losses"} if isinstance(v, dict) else v
                      for k, v in res["curves"].items()}), flush=True)
    big = prepare_vocabulary("compact", texts=texts, dim=256, progress=False).save(tmp / "v256")
    res["memory"] = memory(args.preset, str(big))
    print(json.dumps(res["memory"]), flush=True)
    sys.path.insert(0, str(REPO / "bench"))
    from results_file import write_results

    write_results(REPO / "bench" / "results" / "distributed.json", {"distributed": res})


if __name__ == "__main__":
    main()
