"""Layer-wise growth on the frozen substrate (docs/recipe.md section 6).

The second paper grows a model a few blocks at a time on the frozen glyph embedding: each
stage adds new blocks on top, trains only them and the head (the blocks below stay frozen),
and the next stage starts from the result. No trainer was published; this one is the ordinary
trainer run once per stage:

    stage k: model.num_hidden_layers = depth_k, init_from = stage k-1's run folder,
             freeze_blocks = depth_(k-1), new blocks random (seeded) or copies of the block below

With `lora_rank=r`, every stage that has frozen blocks (all but the first, when growing from
scratch) also trains a rank-r LoRA update of every linear layer of those blocks (the recipe's "so
that the lower layers do not ossify"; `setup.add_lora`, `bvvlab.models.lora`): their base weights stay
frozen, each checkpoint holds the merged plain weights, and the next stage freezes those merged
weights and adds fresh adapters.

So every stage is an ordinary run folder (`OUT/stage_K/`: a Hugging Face model directory with
checkpoints, metrics and meta.json recording `init` (parent checkpoint, new blocks, how they were
initialised) and `frozen_blocks`), resumes exactly like any run (mid-stage from its last
checkpoint; a finished stage is skipped), and loads anywhere a checkpoint does. All stages and the
baseline share one saved embedding (`OUT/embedding/`), so they share tokenizer and frozen matrix.

Two monolithic baselines, the final depth trained from scratch (all blocks, same data, same
batch): `baseline()` for the same number of **tokens** as the whole schedule, and
`compute_baseline()` for the same training **FLOPs** (`training_flops_per_token`: a stage runs
the forward of every block but the backward of the trainable ones only, so a growth token is
cheaper than a monolithic one, and the same-compute baseline gets fewer steps). `bvvlab.analysis.probe.probe_runs()` gives the per-layer
cross-lingual retrieval of each stage (bvvlab.analysis.probe), to see in which block alignment appears.
`OUT/growth.json` sums it up per stage.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bvvlab.core.atomic import ensure_dir, write_json_atomic
from bvvlab.core.locks import folder_lock
from bvvlab.core.config import at_least, one_of
from bvvlab.models import checkpoints as C
from bvvlab.train.config import TYPE_HINTS, TrainConfig, check_lora, make_config
from bvvlab.train.loop import read_metrics, train
from bvvlab.train.setup import weights_digest


def parse_stages(stages: str | Sequence[int]) -> list[int]:
    """"1,1,1" or [1, 1, 1] -> blocks added per stage (each >= 1)."""
    try:
        out = [int(s) for s in (stages.split(",") if isinstance(stages, str) else stages)]
    except ValueError:
        raise ValueError(f"stages={stages!r}: give blocks per stage as integers, e.g. --stages 1,1,1") from None
    if not out or any(n < 1 for n in out):
        raise ValueError(f"stages={stages!r}: every stage adds at least one block, e.g. --stages 1,1,1")
    return out


@dataclass
class GrowConfig:
    """What `bvvlab grow` and notebook 07 set besides the training config of every stage (the
    `base` TrainConfig: preset, data, batch, learning rate...). Built through
    `bvvlab.core.config.build`, so a wrong value is the same line on every surface."""

    stages: str | list[int] = "1,1"  # blocks added per stage, e.g. "1,1,1"
    steps_per_stage: int | None = None  # optimizer steps per stage (None: the training config's steps)
    from_checkpoint: str | None = None  # grow this checkpoint (run or step folder) instead of starting from scratch
    new_block_init: str = "random"  # new blocks: "random" (seeded) or "copy" (of the block below)
    finetune_steps: int = 0  # steps of a final stage training all blocks (0: none)
    lora_rank: int | None = None  # rank of a LoRA update of the frozen blocks (0: none; None: the training config's)
    lora_alpha: float | None = None  # LoRA scale numerator (None: the rank)
    baseline: bool = False  # also train the final depth from scratch for the same number of tokens (OUT/baseline)
    baseline_compute: bool = False  # ... and for the same training FLOPs (OUT/baseline_compute)

    HINTS = TYPE_HINTS  # not a field: what a type error of lora_rank / lora_alpha adds (the trainer's words)

    def validate(self) -> None:
        parse_stages(self.stages)
        at_least("steps_per_stage", self.steps_per_stage, 1, "optimizer steps per stage")
        one_of("new_block_init", self.new_block_init, ("random", "copy"))
        at_least("finetune_steps", self.finetune_steps, 0, "steps of the final fine-tune; 0: none")
        if self.lora_rank is not None:
            check_lora(self.lora_rank, self.lora_alpha)


def _steps(steps: int | Sequence[int], n: int) -> list[int]:
    out = [int(steps)] * n if isinstance(steps, int) else [int(s) for s in steps]
    if len(out) != n or any(s < 1 for s in out):
        raise ValueError(f"steps={steps!r}: one positive step count for all {n} stages, or one per stage")
    return out


def _grow_from(checkpoint: str) -> tuple[str, int]:
    """(checkpoint folder, depth) of `--from`, loaded once through the one loader (every check of
    `bvvlab.models.loader.load`); anything but a bvvlab model is one line in grow's words."""
    from bvvlab.models.loader import load

    lm = load(checkpoint)
    if lm.kind == "fused":
        raise C.CheckpointError(f"--from {checkpoint} is a fused checkpoint (experts {', '.join(lm.experts)}): grow "
                                "one expert's own checkpoint, the run folder it was fused from")
    if lm.kind != "bvv":
        raise C.CheckpointError(f"--from {checkpoint} is a {lm.model.config.model_type!r} model, not one bvvlab "
                                "trained: grow a run folder or checkpoint written by bvvlab train or grow")
    return str(lm.path), int(lm.model.config.num_hidden_layers)


# what a stage folder records of the plan that grew it: TrainConfig key -> how grow's user says it
_PLAN = {"depth": "--stages", "init_from": "--from", "new_block_init": "--new-block-init", "lora_rank": "--lora-rank"}


def _check_stage(d: Path, **want: Any) -> None:
    """A stage (or baseline) folder left by an earlier call must have been grown by the same plan
    to be resumed; otherwise one line naming the grow option that differs (not the TrainConfig
    keys grow sets for each stage, which the user never typed)."""
    if not C.holds_run(d):
        return
    saved = C.read_meta(d).get("config") or {}
    if not saved:
        return
    had = {"depth": (saved.get("model") or {}).get("num_hidden_layers"), "init_from": saved.get("init_from"),
           "new_block_init": saved.get("new_block_init"), "lora_rank": saved.get("lora_rank") or 0}
    for key, flag in _PLAN.items():
        if key in want and had[key] is not None and had[key] != want[key]:
            what = {"depth": f"{had[key]} block{'s' * (had[key] != 1)} deep, this plan makes it {want[key]}",
                    "init_from": f"from {had[key]}, this call from {want[key]}"}.get(key, f"with {flag} {had[key]}, "
                                                                                     f"this call asks for {want[key]}")
            raise ValueError(f"{d} was grown {what} ({flag} differs): re-run with the {flag} it was grown with, or "
                             "choose a new --out")


def shared_embedding(base: TrainConfig, out: Path) -> str:
    """The embedding every stage uses: `base.vocab` when it is a saved embedding, else one built
    for the base config once and saved under `out/embedding` (kept across resumes)."""
    from bvvlab.train import shards as D
    from bvvlab.train.setup import prepare_embedded

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


def _linear_weights(module: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) weights of the nn.Linear layers in `module`: the matmuls of a token. A
    LoRA layer (bvvlab.models.lora) is three matmuls: its frozen W, then A and B (x A^T B^T)."""
    from bvvlab.models.lora import LoRALinear

    lin = [w for m in module.modules() if isinstance(m, torch.nn.Linear)
           for w in ((m.weight, m.lora_A, m.lora_B) if isinstance(m, LoRALinear) else (m.weight,))]
    return sum(w.numel() for w in lin), sum(w.numel() for w in lin if w.requires_grad)


def training_flops_per_token(model: torch.nn.Module, seq_len: int) -> dict[str, Any]:
    """Training FLOPs per token of `model` as it will train (its `requires_grad` flags): the
    forward of every block, the backward of the trainable part only. The 6N rule (Kaplan et al.
    2020, Table 1) with PaLM's attention term (Chowdhery et al. 2022, app. B), as the trainer's MFU
    (`bvvlab.train.loop.flops_per_token`), split into forward and backward:

        forward  = 2 N + 4 L T d
        backward = 2 N_bwd + 2 N_train + 8 L_bwd T d

    N: weights of the matmuls (every nn.Linear: the blocks' qkv/o/up/down projections and the
    head, and a LoRA layer's A and B: r (in + out) more per adapted layer; the frozen embedding
    is a lookup; norms, the softmax and LoRA's scaling are not counted); L blocks; T =
    seq_len; d = hidden_size (attention scores QK^T and AV: 4 T d per block forward). The backward
    passes through the head and every block from the lowest one holding a trainable weight up
    (N_bwd weights in L_bwd blocks): input gradients cost what the forward did (2 per weight, the
    attention scores 2 x 4 T d, both operands), weight gradients 2 per trainable weight (N_train).
    All trainable: 6 N + 12 L T d. A growth stage training the top L_t blocks (N_t weights with the
    head) over frozen ones: 2 N + 4 L T d + 4 N_t + 8 L_t T d: frozen blocks below cost their
    forward only. LoRA on the frozen blocks makes them trainable (A and B): the backward then runs
    through every block (their frozen W cost input gradients, 2 per weight, and no weight
    gradients), so such a stage costs nearly what a monolithic step does. As in the 6N rule, the
    lowest backward block's input gradient is counted although nothing below it trains (the same
    convention for the stages and the baselines)."""
    blocks, head = list(model.model.blocks), model.lm_head
    d, L = model.config.hidden_size, len(blocks)
    trains = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    low = trains.index(True) if any(trains) else L
    n_all = sum(_linear_weights(b)[0] for b in blocks) + _linear_weights(head)[0]
    n_bwd = sum(_linear_weights(b)[0] for b in blocks[low:]) + _linear_weights(head)[0]
    n_train = sum(_linear_weights(b)[1] for b in blocks) + _linear_weights(head)[1]
    fwd = 2 * n_all + 4 * L * seq_len * d
    bwd = 2 * n_bwd + 2 * n_train + 8 * (L - low) * seq_len * d
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "matmul_weights": n_all,
            "trainable_weights": n_train, "backward_blocks": list(range(low, L)),
            "trainable_blocks": [i for i, t in enumerate(trains) if t]}


def stage_flops(config: Any, frozen_blocks: int, seq_len: int, lora_rank: int = 0) -> dict[str, Any]:
    """`training_flops_per_token` of a model of `config` (a BVVConfig, or a checkpoint's
    config.json path) with its first `frozen_blocks` blocks frozen as the trainer freezes them,
    and a rank-`lora_rank` LoRA on those (built on the meta device: no memory, any size)."""
    from bvvlab.models.model import BVVConfig, BVVForCausalLM
    from bvvlab.train.setup import add_lora, freeze

    if not isinstance(config, BVVConfig):
        config = BVVConfig.from_json_file(str(config))
    with torch.device("meta"):
        model = BVVForCausalLM(config)
    add_lora(model, freeze(model, frozen_blocks), lora_rank, None, 0)
    return training_flops_per_token(model, seq_len)


def _stage_record(run: Path, depth: int, added: int, frozen: int, steps: int) -> dict[str, Any]:
    recs = read_metrics(run)
    train_recs = [r for r in recs if r["kind"] == "train"]
    meta = C.read_meta(run)
    final = meta.get("final", {})
    seq_len = int(meta.get("config", {}).get("seq_len") or 0)
    ckpt = C.resolve(run)
    rank = int((meta.get("lora") or {}).get("rank") or 0)
    flops = stage_flops(ckpt / "config.json", frozen, seq_len, rank)["total"] if seq_len else None
    tokens = final.get("tokens_seen")
    if final.get("step") and final["step"] != steps:  # a finished run is never cut back: say what it holds
        print(f"bvvlab grow: {run} has {final['step']} steps (asked {steps}); it is kept as it is", file=sys.stderr,
              flush=True)
        steps = int(final["step"])
    return {"run": str(run), "checkpoint": str(ckpt), "depth": depth, "new_blocks": added,
            "frozen_blocks": frozen, "steps": steps, "tokens": tokens, "flops_per_token": flops,
            "train_flops": None if flops is None or tokens is None else flops * tokens,
            "first_loss": train_recs[0]["loss"] if train_recs else None,
            "last_loss": train_recs[-1]["loss"] if train_recs else None,
            "val_bpc": final.get("val_bpc"), "init": meta.get("init"), "lora": meta.get("lora")}


def grow(base: TrainConfig, stages: str | Sequence[int], steps: int | Sequence[int], out: str | Path,
         new_block_init: str = "random", from_checkpoint: str | None = None, finetune_steps: int = 0,
         callback: Callable[[dict[str, Any]], None] | None = None, lora_rank: int | None = None,
         lora_alpha: float | None = None) -> dict[str, Any]:
    """Grow a model stage by stage under `out` (see the module docstring); returns growth.json's
    content. Re-running the same call resumes: finished stages are skipped, an interrupted stage
    continues from its last checkpoint. A stage whose parent has changed since it started (the
    parent trained further: a larger `steps`) is moved aside to `out/superseded/` and trained
    again on the parent as it is now, and so is every stage after it: a chain never mixes the
    weights of two runs. `from_checkpoint` grows an existing model (its blocks
    are the first frozen ones; `base.vocab` must be the embedding it was trained with).
    `lora_rank` > 0: a LoRA update of the frozen blocks in every stage that has some (alpha:
    `lora_alpha`, default the rank; both None: `base`'s lora_rank / lora_alpha); the final
    fine-tune trains every weight and has none. One grow (or train) per folder at a time
    (`bvvlab.core.locks`); a refused call leaves no empty `out` behind."""
    plan = parse_stages(stages)
    per_stage = _steps(steps, len(plan))
    if finetune_steps < 0:
        raise ValueError(f"finetune_steps={finetune_steps}: must be >= 0")
    if lora_rank is None:  # the base config's setting
        lora_rank = base.lora_rank
        lora_alpha = base.lora_alpha if lora_alpha is None else lora_alpha
    lora_rank, lora_alpha = check_lora(lora_rank, lora_alpha)
    lora_alpha = None if not lora_rank else float(lora_rank) if lora_alpha is None else lora_alpha
    if lora_rank and len(plan) == 1 and not from_checkpoint:
        raise ValueError(f"lora_rank={lora_rank} but no stage has frozen blocks (one stage from scratch): LoRA adapts "
                         "the frozen blocks of later stages; give several stages, --from a checkpoint, or lora_rank=0")
    out = Path(out)
    with folder_lock(out, "grow"):
        existed = out.exists()
        try:
            return _grow(base, plan, per_stage, out, new_block_init, from_checkpoint, finetune_steps, callback,
                         lora_rank, lora_alpha)
        except BaseException:
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # refused before anything was written: no empty folder left behind
            raise


def _grow(base: TrainConfig, plan: list[int], per_stage: list[int], out: Path, new_block_init: str,
          from_checkpoint: str | None, finetune_steps: int, callback: Callable[[dict[str, Any]], None] | None,
          lora_rank: int, lora_alpha: float | None) -> dict[str, Any]:
    parent, depth = _grow_from(from_checkpoint) if from_checkpoint else (None, 0)
    if from_checkpoint and not (Path(base.vocab) / "glyph_matrix.safetensors").exists():
        raise ValueError("--from needs vocab= the saved embedding folder the checkpoint was trained with (a "
                         "vocabulary rebuilt from text could differ; the matrix hash is checked)")
    ensure_dir(out)
    vocab = shared_embedding(base, out)
    summary: dict[str, Any] = {"stages": [], "plan": plan, "steps": per_stage, "new_block_init": new_block_init,
                               "from": parent, "embedding": vocab, "lora_rank": lora_rank,
                               "lora_alpha": lora_alpha, "superseded": []}

    def run(name: str, depth: int, frozen: int, steps: int, init_from: str | None) -> Path:
        d = out / name
        why = stale_stage(d, init_from)
        if why is not None:  # never resume a stage on weights its parent no longer has
            moved = supersede(out, d)
            summary["superseded"].append({"run": name, "moved_to": str(moved), "why": why})
            print(f"bvvlab grow: {d} {why}; moved it to {moved} and training it again", file=sys.stderr, flush=True)
        lora = dict(lora_rank=lora_rank, lora_alpha=lora_alpha) if frozen else dict(lora_rank=0, lora_alpha=None)
        _check_stage(d, depth=depth, init_from=init_from, new_block_init=new_block_init, lora_rank=lora["lora_rank"])
        cfg = make_config(base, **{"model.num_hidden_layers": depth}, steps=steps, vocab=vocab, out=str(d),
                          init_from=init_from, freeze_blocks=frozen, new_block_init=new_block_init,
                          resume=C.holds_run(d), overwrite=False, **lora)
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
    summary["steps"] = [st["steps"] for st in summary["stages"]]  # what the stages hold, as their records say
    runs = summary["stages"] + ([summary["finetune"]] if "finetune" in summary else [])
    flops = [r["train_flops"] for r in runs]
    summary["train_flops"] = None if None in flops else sum(flops)
    write_json_atomic(out / "growth.json", summary)
    return summary


def stale_stage(run: Path, parent: str | None) -> str | None:
    """Why the stage in `run` may not continue on `parent` (None: it may, or `run` holds no run):
    the weights it started from (`init.parent_sha256` in its meta.json; `init.from` for a stage
    recorded before digests were) are not the parent's newest checkpoint's."""
    if parent is None or not C.holds_run(run):
        return None
    init = C.read_meta(run).get("init") or {}
    now = C.resolve(parent)
    if init.get("parent_sha256"):
        same = init["parent_sha256"] == weights_digest(now)
    else:
        same = init.get("from") == str(now)
    return None if same else f"started from {init.get('from') or 'other weights'}, but its parent is now {now}"


def supersede(out: Path, run: Path) -> Path:
    """Move a stage folder aside into `out/superseded/NAME-TIME/` (nothing is deleted)."""
    import datetime as _dt

    dest = ensure_dir(out / "superseded") / f"{run.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    os.replace(run, dest)
    return dest


def same_compute_steps(summary: dict[str, Any]) -> dict[str, Any]:
    """Steps of the same-compute baseline: the final depth, all blocks trainable, same batch, for
    round(growth FLOPs / (its FLOPs per token x tokens per step)) steps (at least 1). `summary`:
    what `grow` returned (its stages, and a final fine-tune, carry `train_flops` and `tokens`; a
    `from_checkpoint` parent's own training is not counted: it is the same for both sides)."""
    last = summary["stages"][-1]
    if summary.get("train_flops") is None:
        raise ValueError("the growth summary has no train_flops (a stage without seq_len in its meta.json)")
    seq_len = int(C.read_meta(last["run"])["config"]["seq_len"])
    per_token = stage_flops(Path(last["checkpoint"]) / "config.json", 0, seq_len)["total"]
    tokens_per_step = last["tokens"] // last["steps"]
    steps = max(1, round(summary["train_flops"] / (per_token * tokens_per_step)))
    return {"steps": steps, "flops_per_token": per_token, "tokens_per_step": tokens_per_step,
            "growth_flops": summary["train_flops"], "depth": last["depth"]}


def compute_baseline(base: TrainConfig, summary: dict[str, Any], out: str | Path,
                     callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The same-compute monolithic baseline (`same_compute_steps`): `baseline()` for as many steps
    as the growth schedule's training FLOPs buy a from-scratch model of the final depth. The record
    adds `growth_flops` and `compute_ratio` (its FLOPs / the schedule's: 1 up to one step's
    rounding)."""
    plan = same_compute_steps(summary)
    rec = baseline(base, plan["depth"], plan["steps"], out, vocab=summary["embedding"], callback=callback)
    rec["growth_flops"] = plan["growth_flops"]
    rec["compute_ratio"] = None if rec["train_flops"] is None else rec["train_flops"] / plan["growth_flops"]
    return rec


def baseline(base: TrainConfig, depth: int, steps: int, out: str | Path, vocab: str | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The monolithic comparison: `depth` blocks trained together from scratch for `steps` steps
    (same batch and sequence length as the growth stages: the same number of tokens when `steps`
    is their sum), on the same embedding."""
    out = Path(out)
    _check_stage(out, depth=depth)
    vocab = vocab or shared_embedding(base, out.parent)
    cfg = make_config(base, **{"model.num_hidden_layers": depth}, steps=steps, vocab=vocab, out=str(out),
                      resume=C.holds_run(out), overwrite=False, lora_rank=0, lora_alpha=None)
    train(cfg, callback=callback)
    return _stage_record(out, depth, depth, 0, steps)
