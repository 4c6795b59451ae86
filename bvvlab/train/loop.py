"""The trainer: one loop for a laptop CPU and for GPUs, with exact resume.

`train(cfg)` trains the model of docs/recipe.md section 4 (frozen glyph embedding, or its
trainable twin) on a token-shard mixture (`bvvlab.train.shards`) and writes a run folder:

    out/meta.json              config, git commit, versions, device, data, seed, resumes, final metrics
    out/metrics.jsonl          one JSON record per log / eval step
    out/checkpoints/step_N/    a Hugging Face checkpoint dir + trainer_state.safetensors (optimizer,
                               scheduler, step, batch-sampler and every RNG state; no pickle)
    out/config.json, ...       when the run ends: its final model as a plain HF directory

The rooms: `config` (TrainConfig, merging, the resume rule), `bvvlab.models.checkpoints` (save,
load, resolve, verify, clean), `setup` (vocabulary and model), `shards` (token shards and
batches), `distributed` (torchrun set-up), `validation` (bits per character); here:
`train_step` (one optimizer step) and the loop.

Why each piece:
- AdamW + linear warmup + cosine decay + clipping: the usual recipe (the seed's optimiser is not
  published, docs/recipe.md section 4). Fused AdamW (CPU and CUDA; foreach where fused is not
  available), bf16 autocast on CUDA by default, fp32 on CPU by default.
- No host sync per step outside logging, evaluation and saving: the loss and gradient norm stay
  on the device until a record is written; a non-finite loss or gradient norm skips its update
  on the device (the fused optimizer's `found_inf`) and stops the run at the next record,
  naming the step, so no bad update is ever applied or saved. On CUDA the next batch is copied
  from pinned memory while the current step runs.
- Exact resume: everything that decides the next step is saved, so on CPU a resumed run ends
  bit-identical to an uninterrupted one. A resume starts from the newest intact checkpoint (a
  damaged one is named and skipped) and from the config the run saved; see `train_config`.
- DDP through torchrun: every rank draws the same global batch and takes its slice; the
  per-rank loss is averaged by DDP, so N processes follow the one-process curve.
- SIGINT/SIGTERM save a checkpoint after the current step and stop with `Interrupted`
  (the command exits 130/143 and says how to resume).

The command line is `bvvlab train` (bvvlab.cli.train):

    bvvlab train --preset tiny --steps 20 --out runs/smoke
    bvvlab train --out runs/smoke --resume steps=40          # continue (and extend) a run
    torchrun --nproc_per_node 2 -m bvvlab train --config configs/tiny.json   # DDP: Gloo on CPU, NCCL on GPU
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bvvlab.core.atomic import ensure_dir, output_error, write_atomic, write_json_atomic
from bvvlab.core.errors import BVVError, Interrupted
from bvvlab.core.locks import folder_lock
from bvvlab.core.runinfo import run_meta
from bvvlab.models import checkpoints as C
from bvvlab.train import distributed as dist
from bvvlab.train import sharded
from bvvlab.train import shards as D
from bvvlab.train.config import (  # noqa: F401
    RESUME_MAY_CHANGE,
    TrainConfig,
    check_model_keys,
    config_keys,
    interface_kind,
    load_config_file,
    make_config,
    resume_config,
    saved_config,
)
from bvvlab.train.validation import evaluate_bpc, lm_loss  # noqa: F401  (lm_loss: re-exported)

# re-exported for callers of the slice's names
STATE_FILE, CKPT_PREFIX, EMBED_KEY = C.STATE_FILE, C.CKPT_PREFIX, C.EMBED_KEY
last_checkpoint, clean_leftovers, list_checkpoints = C.last_checkpoint, C.clean_leftovers, C.list_checkpoints
save_trainer_checkpoint = C.save_trainer_checkpoint

class NonFiniteLoss(BVVError):
    """The loss became NaN/inf: the run stops before the bad update; the last good checkpoint is kept."""


from bvvlab.models import lora  # noqa: E402
from bvvlab.train.preflight import check_ranks  # noqa: E402
from bvvlab.train.prepare import training_shards  # noqa: E402
from bvvlab.train.runtime import (  # noqa: E402,F401  (the trainer's pieces; loop.X keeps working)
    PEAK_FLOPS_BF16,
    autocast,
    compile_model,
    flops_per_token,
    lr_at,
    make_optimizer,
    peak_flops,
    resolve_device,
    resolve_dtype,
    rng_state,
    seed_everything,
    set_rng_state,
)
from bvvlab.train.setup import (  # noqa: E402,F401
    add_lora,
    build_model,
    build_model_config,
    embedding_hash,
    freeze,
    init_from_checkpoint,
    load_for_resume,
    model_dim,
    prepare_embedded,
    vocab_texts,
)

# ---------------------------------------------------------------------------------------------
# one optimizer step


@dataclass
class StepOut:
    """What a step leaves on the device: read them (a host sync) only when logging."""

    loss: torch.Tensor  # mean next-token loss of the global batch on this rank (nats/token)
    grad_norm: torch.Tensor  # global gradient norm before clipping
    bad: torch.Tensor  # 1.0 if the loss or the gradient norm was not finite (the update was skipped)


def train_step(fwd_model: torch.nn.Module, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
               rows: torch.Tensor, grad_accum: int, grad_clip: float, amp: Callable = contextlib.nullcontext,
               ddp: Any = None, world: int = 1) -> StepOut:
    """Forward, backward over `grad_accum` micro-batches of `rows` (this rank's share of the
    global batch), clipping and the AdamW update, with no host sync: a non-finite loss or
    gradient norm makes the fused optimizer skip the update (`found_inf`); the foreach fallback,
    which has no such input, checks on the host instead."""
    loss_sum = torch.zeros((), device=rows.device)
    for micro_step, window in enumerate(rows.chunk(grad_accum)):
        last = micro_step == grad_accum - 1
        ctx = ddp.no_sync() if (ddp is not None and not last) else contextlib.nullcontext()
        with ctx, amp():
            loss = lm_loss(fwd_model, window) / grad_accum
        loss.backward()
        loss_sum += loss.detach().float()
    gnorm = sharded.scalar(torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"),
                                                          foreach=True))  # FSDP: a DTensor
    bad = (~(torch.isfinite(loss_sum) & torch.isfinite(gnorm))).float()
    if world > 1:  # every rank must skip the same updates
        import torch.distributed as tdist

        tdist.all_reduce(bad, op=tdist.ReduceOp.MAX)
    if opt.defaults.get("fused"):
        opt.found_inf = bad  # the fused kernel leaves parameters and moments alone when it is 1
        opt.step()
    elif not bool(bad):  # foreach: one host check (CPU, or devices without the fused kernel)
        opt.step()
    opt.zero_grad(set_to_none=True)
    return StepOut(loss_sum, gnorm.detach(), bad)


class Batches:
    """This rank's rows of each global batch; on CUDA the next batch is prepared in pinned memory
    and copied without blocking while the current step runs. `state_dict()` is the sampler's state
    as of the batches handed out (not the prefetched one), so a resume draws the same batches."""

    def __init__(self, sampler: D.BatchSampler, device: torch.device):
        self.sampler, self.device = sampler, device
        self.prefetch = device.type == "cuda"
        self._next: tuple[torch.Tensor, dict[str, Any]] | None = None
        self._state = sampler.state_dict()

    def _draw(self) -> tuple[torch.Tensor, dict[str, Any]]:
        before = self.sampler.state_dict()
        rows = self.sampler.next_batch()
        if self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return rows, before

    def next(self) -> torch.Tensor:
        rows, _ = self._next if self._next is not None else self._draw()
        self._state = self.sampler.state_dict()
        self._next = self._draw() if self.prefetch else None
        if self._next is not None:
            self._state = self._next[1]
        return rows.to(self.device)  # a no-op for rows already copied to the device

    def state_dict(self) -> dict[str, Any]:
        return self._state


# ---------------------------------------------------------------------------------------------
# records


class RunLog:
    """metrics.jsonl (one JSON record a line), optional TensorBoard, and the caller's callback;
    only rank 0 writes."""

    def __init__(self, out: Path, active: bool, tensorboard: bool,
                 callback: Callable[[dict[str, Any]], None] | None):
        self.path, self.active, self.callback = out / "metrics.jsonl", active, callback
        self.records: list[dict[str, Any]] = []
        self.writer = None
        if active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def emit(self, rec: dict[str, Any]) -> None:
        if not self.active:
            return
        self.records.append(rec)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        except OSError as exc:  # a full disk: one line; the checkpoints already saved are intact
            raise output_error(exc, self.path) from None
        if self.writer is not None:
            for k, v in rec.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and v is not None:
                    self.writer.add_scalar(k, v, rec["step"])
        if self.callback is not None:
            self.callback(rec)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records a killed run wrote after its last checkpoint (they are replayed)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    write_atomic(path, "".join(k + "\n" for k in keep))


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# the loop

class _Signals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and returns."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some notebook runners): no handler
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(cfg: TrainConfig, callback: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train per `cfg`; return the final checkpoint directory (a Hugging Face model dir).

    `callback(record)` is called on rank 0 with every metrics record (live plots). Under torchrun
    (WORLD_SIZE > 1) the process group is set up here (NCCL on GPU, Gloo on CPU).
    """
    info = dist.dist_info()
    cfg.validate(info.world, before_resume=cfg.resume)
    if cfg.tensorboard:
        try:
            importlib.import_module("torch.utils.tensorboard")
        except ImportError:
            raise ValueError("tensorboard=true needs the tensorboard package: pip install tensorboard "
                             "(it is in bvvlab's dev extra)") from None
    if cfg.resume:
        cfg = resume_config(cfg)
        cfg.validate(info.world)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out={out} is a file, not a folder: choose another out=")
    # one writer per run folder (rank 0 speaks for a torchrun job): a second train or grow there is refused
    with folder_lock(out, "train") if info.is_main else contextlib.nullcontext():
        if C.holds_run(out) and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(f"{out} already holds a run: pass resume=true to continue it, overwrite=true to "
                                  "replace it, or choose another out=")
        device = resolve_device(cfg, info.local_rank)
        dtype = resolve_dtype(cfg, device)
        with dist.process_group(info, device):
            check_ranks(cfg, info)  # several nodes: the same config and corpus everywhere, or one line on every rank
            if device.type == "cuda":
                torch.cuda.set_device(device)
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            return _Run(cfg, callback, out, device, dtype, info).run()


def _resume_point(cfg: TrainConfig, out: Path, is_main: bool) -> Path | None:
    """The newest intact checkpoint to resume from (damaged newer ones named on stderr, and the
    one taken instead), None for a fresh start (said on stdout: information, not a warning); refuses
    when the run has weights but no resumable state (nothing is deleted)."""
    if not cfg.resume:
        return None
    ckpt, skipped = C.newest_intact(out)
    if is_main:
        for bad, why in skipped:
            print(f"bvvlab train: {bad} is damaged ({why}); skipping it", file=sys.stderr, flush=True)
    if ckpt is not None:
        if skipped and is_main:
            # beside the damage warnings above, on stderr with them (the CLI tests read them together)
            print(f"bvvlab train: resuming from the newest intact checkpoint {ckpt}", file=sys.stderr, flush=True)
        return ckpt
    if skipped:
        raise C.CheckpointError(f"every checkpoint of {out} is damaged ({'; '.join(f'{p.name}: {w}' for p, w in skipped)})"
                                ": restore one, or start again with overwrite=true or a new out=")
    weights = [p for p in C.step_dirs(out) if C.is_model_dir(p)]
    if weights:
        raise C.CheckpointError(f"{out} has checkpoints without trainer state ({', '.join(p.name for p in weights)}): "
                                "a run cannot resume from them exactly; keep them and choose a new out=, or pass "
                                "overwrite=true to delete them and start again")
    if is_main:  # the preemptible-job pattern: always pass --resume. Information, so stdout: a notebook
        # draws stderr as a pink box, and a successful run looked failed (issue 24)
        print(f"bvvlab train: no checkpoint in {out} to resume from; starting a fresh run", flush=True)
    return None


class _Run:
    """One training run: set-up (vocabulary, model, data, optimizer, run folder) then `loop()`."""

    def __init__(self, cfg: TrainConfig, callback: Callable | None, out: Path, device: torch.device, dtype: str,
                 info: dist.DistInfo):
        self.cfg, self.out, self.device, self.dtype, self.info = cfg, out, device, dtype, info
        self.callback = callback
        self.is_main, self.world = info.is_main, info.world
        self.t_start = time.time()
        self.timers = {"eval_s": 0.0, "eval_cpu_s": 0.0, "save_s": 0.0}
        self.step = self.tokens_seen = 0
        self.init: dict[str, Any] | None = None  # what init_from copied (growth), for meta.json
        self.fsdp = False
        self._plain: dict[str, Any] = {}  # FSDP: the plain model checkpoints are saved from

    # -- set-up --------------------------------------------------------------------------------
    def setup(self) -> Path | None:
        """Model, data, optimizer (and, resuming, their saved state), ready for the first step;
        returns the checkpoint resumed from, or None for a fresh run."""
        cfg, out, is_main = self.cfg, self.out, self.is_main
        weights = D.normalize_weights(cfg.corpus)
        if is_main and (cfg.resume or cfg.overwrite):  # a run killed while saving left these behind
            C.clean_leftovers(out)
        dist.barrier(self.world)
        resume_from = _resume_point(cfg, out, is_main)
        seed_everything(cfg.seed)
        if resume_from is not None:
            model, tokenizer, embedded = load_for_resume(cfg, out, resume_from)
        else:
            model, tokenizer, embedded = self.new_model(weights)
        if cfg.seq_len > model.config.max_position_embeddings:
            raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's context of "
                             f"{model.config.max_position_embeddings} tokens: use seq_len<="
                             f"{model.config.max_position_embeddings} or model.max_position_embeddings=...")
        # one name for the matrix's identity: `matrix_hash` (meta.json) = `embedding_hash` (config.json)
        self.matrix_hash = getattr(embedded, "matrix_hash", None)
        frozen = interface_kind(cfg) != "trainable"
        self.frozen_hash = embedding_hash(model) if frozen else None  # what the save guard checks
        recorded = self.matrix_hash if resume_from is not None else None
        if frozen and recorded and self.frozen_hash != recorded:
            raise RuntimeError(f"frozen glyph matrix of {resume_from} does not match the hash the run recorded in "
                               "meta.json: the checkpoint was altered; resume from an intact copy")
        self.embedded_meta = getattr(embedded, "meta", None)

        self.train_shard, self.val_shard = self.open_shards(weights, tokenizer)

        model.to(self.device)
        self.model, self.tokenizer = model, tokenizer
        self.micro = cfg.batch_size // (cfg.grad_accum * self.world)
        self.sampler = D.BatchSampler(self.train_shard, cfg.seq_len, cfg.batch_size, seed=cfg.seed,
                                      rank=self.info.rank, world_size=self.world)
        self.frozen_blocks = freeze(model, cfg.freeze_blocks)  # before the optimizer: it takes trainable ones only
        # LoRA on the frozen blocks (growth): adapters train, base weights stay frozen; checkpoints hold them merged
        self.lora = add_lora(model, self.frozen_blocks, cfg.lora_rank, cfg.lora_alpha, cfg.seed)
        self.fsdp = cfg.fsdp and self.world > 1
        if self.fsdp:  # before the optimizer: it steps on the local shards
            sharded.shard(model)
        self.opt = make_optimizer(model, cfg, self.device, fused=not self.fsdp)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_at(s, cfg) / cfg.lr)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if resume_from is not None:
            self.restore_state(resume_from)
        self.batches = Batches(self.sampler, self.device)

        self.fwd_model: Any = model
        self.ddp: Any = None
        if self.world > 1 and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # the frozen matrix is a constant buffer: re-broadcasting it every forward would only cost bandwidth
            self.fwd_model = self.ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None, forward_sync_buffers=False)
        if cfg.compile:
            self.fwd_model = compile_model(self.fwd_model)
        self.amp = autocast(self.dtype, self.device)
        self.peak = peak_flops(self.device)
        self.fpt = flops_per_token(model, cfg.seq_len)
        return resume_from

    def new_model(self, weights: dict[str, float]) -> tuple[torch.nn.Module, Any, Any]:
        """A fresh run's model, tokenizer and glyph matrix (rank 0 builds a compact vocabulary, the
        others read its cache); `init_from` copies a smaller checkpoint's weights in (growth)."""
        cfg = self.cfg
        texts = vocab_texts(cfg, weights)  # a compact vocabulary covers the training text
        embedded = dist.rank0_first(self.info, lambda: prepare_embedded(cfg, texts))
        model = build_model(cfg, embedded)
        if cfg.init_from:
            self.init = init_from_checkpoint(model, cfg)
        return model, embedded.tokenizer, embedded

    def open_shards(self, weights: dict[str, float], tokenizer: Any) -> tuple[Any, Any]:
        """The training and validation token shards: prepared shards are opened; a small missing one
        is built by rank 0 while the others wait (bvvlab.train.prepare)."""
        shards = training_shards(self.cfg, tokenizer, self.info)
        return shards["train"], shards[self.cfg.val_split]

    def restore_state(self, checkpoint: Path) -> None:
        """Resume exactly: LoRA adapters, optimizer, schedule, sampler position, step and RNG state
        from the checkpoint's trainer state."""
        state = C.read_trainer_state(checkpoint)
        if self.lora:  # model.safetensors holds merged weights: the unmerged base and adapters come from here
            if "lora" not in state:
                raise C.CheckpointError(f"{checkpoint} has no LoRA state in {C.STATE_FILE} but the run has "
                                        f"lora_rank={self.cfg.lora_rank}: resume with the run's own settings")
            lora.load_state(self.model, state["lora"])
        if self.fsdp:
            sharded.load_optimizer_state(self.model, self.opt, state["optimizer"])
        else:
            self.opt.load_state_dict(state["optimizer"])
        for g in self.opt.param_groups:  # the kernel (fused/foreach) is this run's choice, not saved state
            g.update({k: self.opt.defaults[k] for k in ("fused", "foreach") if k in self.opt.defaults})
        self.sched.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        rngs = state["rng"]
        set_rng_state(rngs[self.info.rank] if isinstance(rngs, list) else rngs)

    def write_run_folder(self, resume_from: Path | None) -> None:
        """meta.json and metrics.jsonl: written only now, when data and model are known to be good."""
        cfg, out = self.cfg, self.out
        meta = run_meta(cfg, seed=cfg.seed, world_size=self.world, dtype=self.dtype, matrix_hash=self.matrix_hash,
                        embedding=self.embedded_meta, init=self.init, frozen_blocks=self.frozen_blocks,
                        lora=self.lora or None,
                        optimizer="AdamW fused" if self.opt.defaults.get("fused") else "AdamW foreach",
                        data={"train": self.train_shard.meta, "validation": self.val_shard.meta},
                        model={"config": self.model.config.to_dict(),
                               "trainable_params": sum(p.numel() for p in self.params),
                               "flops_per_token": self.fpt})
        if self.is_main:
            if resume_from is None and (cfg.overwrite or cfg.resume) and out.exists():
                # replacing a run (overwrite=true), or "resuming" one that died before its first
                # checkpoint: its records are void (a resume never gets here with weights saved)
                for name in ("checkpoints", "tb"):
                    shutil.rmtree(out / name, ignore_errors=True)
                for name in ("meta.json", "metrics.jsonl"):
                    (out / name).unlink(missing_ok=True)
            ensure_dir(out)
            if resume_from is not None:
                prev = C.read_meta(out)
                history = list(prev.get("resumes") or ([prev["resumed"]] if "resumed" in prev else []))
                history.append({"created": meta["created"], "from_checkpoint": str(resume_from), "at_step": self.step,
                                "git_commit": meta["git_commit"], "device": meta["device"],
                                "steps": cfg.steps})
                meta = {**prev, **{k: v for k, v in meta.items() if k not in ("created", "init")}, "resumes": history}
                meta.pop("resumed", None)
                meta.pop("final", None)
            write_json_atomic(out / "meta.json", meta)
            _truncate_metrics(out / "metrics.jsonl", self.step)
        self.meta = meta
        self.log = RunLog(out, self.is_main, cfg.tensorboard, self.callback)

    # -- pieces of the loop ----------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> None:
        """Periodic: the first eval_batches x batch_size windows (cheap, comparable along the run);
        final: the whole validation shard, so the reported figure is the split's, not a sample's,
        each window scored on its own: the interval over windows goes into the log, the windows'
        bits and characters into meta.json's `final` (a paired gap between twins, issue 24)."""
        if not self.is_main and not self.fsdp:  # FSDP: every rank takes part in the forward
            return
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate_bpc(self.model, self.val_shard, self.cfg.seq_len,
                          None if final else self.cfg.eval_batches * self.cfg.batch_size, self.micro, self.device,
                          self.amp, per_window=final)
        if self.fsdp:
            sharded.reshard(self.model)
        self.val_windows = {k: ev.pop(k) for k in ("val_window_bits", "val_window_chars") if k in ev}
        ev["val_full"] = final
        self.timers["eval_s"] += time.perf_counter() - t0
        self.timers["eval_cpu_s"] += time.process_time() - c0
        self.log.emit({"kind": "eval", "step": self.step, "tokens": self.tokens_seen, **ev})

    def trainer_state(self) -> dict[str, Any]:
        rngs = dist.gather_objects(rng_state(), self.world)  # collective under DDP: every rank takes part
        optimizer = sharded.optimizer_state(self.model, self.opt) if self.fsdp else self.opt.state_dict()
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "optimizer": optimizer,
                 "scheduler": self.sched.state_dict(), "sampler": self.batches.state_dict(), "rng": rngs,
                 "config": dataclasses.asdict(self.cfg)}
        if self.lora:  # the unmerged base weights and adapters: a resume continues from these exactly
            state["lora"] = lora.state(self.model)
        return state

    def save(self) -> Path:
        t0 = time.perf_counter()
        st = self.trainer_state()
        path = self.out / "checkpoints" / f"{CKPT_PREFIX}{self.step:07d}"
        full = sharded.model_state(self.model) if self.fsdp else None  # gathered on rank 0 (a collective)
        if self.is_main:
            ckpt_meta = {**self.meta, "step": self.step, "tokens_seen": self.tokens_seen}
            model = sharded.plain_model(self.model, full, self._plain) if full is not None else self.model
            with lora.merged(model) as plain:  # model.safetensors: plain merged weights (no LoRA keys)
                path = C.save_trainer_checkpoint(self.out, self.step, plain, self.tokenizer, st, ckpt_meta,
                                                 self.cfg.keep_last, self.frozen_hash)
        dist.barrier(self.world)
        self.timers["save_s"] += time.perf_counter() - t0
        return path

    def check_finite(self, bad_since: torch.Tensor, first_bad: torch.Tensor, lr_of: dict[int, float]) -> None:
        """A host sync: stop if any step since the last check had a non-finite loss or gradient norm."""
        if float(bad_since) > 0:
            at = int(first_bad)
            raise NonFiniteLoss(f"loss or gradient norm is not finite at step {at} (lr {lr_of.get(at, math.nan):.3g}); "
                                f"the run stopped, that update was not applied; last good checkpoint: "
                                f"{C.last_checkpoint(self.out) or 'none'}; lower lr= or raise warmup=")

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> Path:
        resume_from = self.setup()
        if resume_from is not None and self.step >= self.cfg.steps:
            return resume_from
        self.write_run_folder(resume_from)
        cfg = self.cfg
        from tqdm.auto import tqdm

        if self.step == 0 and cfg.eval_every > 0:
            self.evaluate()
        tokens_per_step = cfg.batch_size * cfg.seq_len
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not (cfg.progress and self.is_main),
                   dynamic_ncols=True, mininterval=1.0)
        last_path: Path | None = None
        busy, tok_log = 0.0, 0  # seconds spent in training steps (no eval, no saving) since the last record
        dev = self.device
        bad_since = torch.zeros((), device=dev)
        first_bad = torch.zeros((), dtype=torch.long, device=dev)
        lr_of: dict[int, float] = {}
        self.model.train()
        t_loop, c_loop, step0 = time.perf_counter(), time.process_time(), self.step
        try:
            with _Signals() as sig:
                while self.step < cfg.steps:
                    t_step = time.perf_counter()
                    lr = self.sched.get_last_lr()[0]
                    out = train_step(self.fwd_model, self.params, self.opt, self.batches.next(), cfg.grad_accum,
                                     cfg.grad_clip, self.amp, self.ddp, self.world)
                    self.sched.step()
                    self.step += 1
                    lr_of[self.step] = lr
                    first_bad = torch.where((bad_since == 0) & (out.bad > 0), self.step, first_bad)
                    bad_since = torch.maximum(bad_since, out.bad)
                    self.tokens_seen += tokens_per_step
                    tok_log += tokens_per_step
                    busy += time.perf_counter() - t_step
                    bar.update(1)
                    log_now = self.step % cfg.log_every == 0 or self.step == cfg.steps
                    save_now = self.step % cfg.save_every == 0 or self.step == cfg.steps
                    eval_now = self.step == cfg.steps or bool(cfg.eval_every and self.step % cfg.eval_every == 0)
                    if log_now or save_now or eval_now:
                        self.check_finite(bad_since, first_bad, lr_of)
                        lr_of.clear()
                    if log_now:
                        self.log_train(out, lr, tok_log, busy, bar)
                        busy, tok_log = 0.0, 0
                    if self.step == cfg.steps:
                        self.evaluate(final=True)
                    elif eval_now:
                        self.evaluate()
                    # a signal is a flag on this process; under DDP the ranks agree at log steps only
                    # (a collective and a host sync), so every rank stops at the same step
                    stop = sig.received is not None
                    if self.world > 1:
                        stop = dist.any_rank(stop, self.world, dev) if (log_now or save_now) else False
                    if save_now or stop:
                        last_path = self.save()
                    if stop:
                        break
        finally:
            bar.close()
            self.log.close()
        loop = {"loop_s": time.perf_counter() - t_loop, "loop_cpu_s": time.process_time() - c_loop,
                "loop_steps": self.step - step0}
        if self.step < cfg.steps:  # interrupted: saved, not finished
            self.interrupted(sig.received or "SIGINT", last_path)
        assert last_path is not None
        if self.is_main:
            self.finish(last_path, loop)
        return last_path

    def log_train(self, out: StepOut, lr: float, tokens: int, busy: float, bar: Any) -> None:
        """A train record: the only place a step's loss and gradient norm are read on the host."""
        if self.device.type == "cuda":  # the queued work belongs to these steps: tok_per_s counts it
            t_sync = time.perf_counter()
            torch.cuda.synchronize(self.device)
            busy += time.perf_counter() - t_sync
        loss = float(dist.all_reduce_mean(out.loss.clone(), self.world))
        tps = tokens / max(busy, 1e-9)
        rec = {"kind": "train", "step": self.step, "tokens": self.tokens_seen, "loss": loss, "lr": lr,
               "grad_norm": float(out.grad_norm), "tok_per_s": tps}
        if self.peak is not None:
            rec["mfu"] = self.fpt * tps / (self.peak * self.world)
        self.log.emit(rec)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def interrupted(self, name: str, last_path: Path | None) -> None:
        """Saved but not finished: meta.json says so, and `Interrupted` carries 130/143 to the CLI."""
        if self.is_main:
            self.meta["interrupted"] = {"step": self.step, "signal": name, "checkpoint": str(last_path)}
            write_json_atomic(self.out / "meta.json", self.meta)
        raise Interrupted(f"interrupted ({name}) at step {self.step} of {self.cfg.steps}; saved {last_path}; resume "
                          f"with: bvvlab train --out {self.out} --resume", exit_code=143 if name == "SIGTERM" else 130)

    def finish(self, last_path: Path, loop: dict[str, float]) -> None:
        """meta.json's `final` record, and the run folder made a plain HF directory of the final model."""
        final = {k: v for r in self.log.records for k, v in r.items() if k not in ("kind",)}
        # loop_s: the whole loop (steps, data, logging, evals, saves) of this process, for bench/
        self.meta["final"] = {"step": self.step, "tokens_seen": self.tokens_seen, "wall_s": time.time() - self.t_start,
                              **loop, **self.timers,
                              **{k: final[k] for k in ("loss", "val_loss", "val_bpc", "val_chars", "val_tokens",
                                                       "tok_per_s", "mfu", "val_bpc_low", "val_bpc_high",
                                                       "val_windows") if k in final},
                              **getattr(self, "val_windows", {})}
        self.meta["checkpoint"] = str(last_path)
        self.meta.pop("interrupted", None)
        C.publish_final(self.out, last_path)  # from_pretrained(run_dir) works, as for HF Trainer's output_dir
        write_json_atomic(self.out / "meta.json", self.meta)
