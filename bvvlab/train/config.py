"""The trainer's typed configuration: `TrainConfig`, merging and validation.

One dataclass holds everything a training run depends on; it is saved with every run and
checkpoint. `make_config` builds one from a base (a file, a dict, another config) and `key=value`
overrides (strings from the command line or a notebook's papermill parameters are coerced to
the field's type, with one line naming the key when they do not fit). `resume_config` is the
rule of a resume: start from the config the run saved, and apply only the keys given explicitly;
of those only `steps` and `RESUME_MAY_CHANGE` may differ.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvvlab.core.config import coerce
from bvvlab.core.errors import BVVError  # noqa: F401  (config errors are ValueErrors: BVVError is one)
from bvvlab.train import shards as D


@dataclass
class TrainConfig:
    """Everything one training run depends on (saved in meta.json; `key=value` on the CLI)."""

    preset: str = "tiny"  # model preset of bvvlab.models.model.PRESETS
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's config fields (HF names)
    frozen: bool = True  # frozen glyph embedding (True) or its trainable, randomly initialised twin
    # the interface_* keys shape a frozen code (n bits widened by repeat_interleave; bvvlab.glyph.interfaces)
    interface: str = "glyph"  # the input interface: glyph | trainable (= frozen=false) | id-bits | random-bits | float
    interface_dim: int | None = None  # n, bits (or float dims) of the code; None = the kind's default, see default_dim
    interface_order: str = "msb"  # id-bits: msb (column 0 = the id's highest bit) or lsb
    interface_values: str = "pm1"  # bits as -1/+1 (pm1) or 0/1 (01)
    interface_scale: float | None = None  # factor on the widened code; None = unit-norm rows (like glyph rows)
    interface_seed: int = 0  # seed of the random-bits / float code (fixed across training seeds, so experts fuse)
    vocab: str = "compact"  # "compact", "bvv241-2-3", "bvv241-max", a tokenizer dir or a saved embedding dir
    dim: int | None = None  # embedding width; None = the model's hidden_size
    corpus: dict[str, float] = field(default_factory=lambda: {"libreoffice-en-ru": 1.0})  # source -> weight
    train_chars: int | None = None  # characters of training text to tokenise (None = the whole split)
    val_chars: int | None = 200_000  # characters of held-out validation text to tokenise (all evaluated at the end)
    val_split: str = "validation"  # split of the same sources used for validation
    seq_len: int = 128  # tokens per training window
    batch_size: int = 16  # global batch (windows per optimizer step, all ranks and micro-steps together)
    grad_accum: int = 1  # micro-steps per optimizer step (per rank)
    steps: int = 200  # optimizer steps (a resume may raise it: the cosine is then recomputed over the new total)
    lr: float = 1e-3  # peak learning rate
    warmup: int = 20  # linear warmup steps (at most steps // 5, so short runs also decay)
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    weight_decay: float = 0.1  # AdamW decay of matrices (norms and biases are not decayed)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    seed: int = 0  # seeds model init, data order and the batch sampler
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA with bf16 support, else fp32), "fp32" or "bf16" (autocast)
    compile: bool = False  # torch.compile the model
    log_every: int = 10  # steps between train-metric records
    eval_every: int = 50  # steps between validation records (0 = only the final one, over the whole validation shard)
    eval_batches: int = 4  # validation batches of batch_size windows per periodic evaluation (the final one: all)
    save_every: int = 100  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept (older ones are deleted)
    out: str = "runs/train"  # run directory
    resume: bool = False  # continue the run in `out` from its last checkpoint and saved config (fresh start if none)
    overwrite: bool = False  # replace a run already in `out`
    tensorboard: bool = False  # also write TensorBoard events to out/tb
    init_from: str | None = None  # start from this checkpoint's weights (run or step folder; growth: a shallower model)
    new_block_init: str = "random"  # blocks init_from lacks: "random" (seeded) or "copy" (of the block below)
    freeze_blocks: int = 0  # the first N blocks are not trained (layer-wise growth trains only new blocks + head)
    lora_rank: int = 0  # rank of a trainable LoRA update of every linear layer of the frozen blocks (0 = none)
    lora_alpha: float | None = None  # LoRA scale numerator: the update is (alpha / rank) B A; None = rank (scale 1)
    progress: bool = True  # tqdm bars
    fsdp: bool = False  # under torchrun: shard weights, gradients and AdamW state over the ranks (FSDP2), not DDP
    shard_dir: str | None = None  # folder of token shards (`bvvlab data prepare`; shared storage); None = the cache

    # not a field (never saved or compared): the keys make_config was given explicitly ("model.<f>"
    # for a model override); a resume applies only these over the saved config. None = every key.
    _explicit = None

    def validate(self, world_size: int = 1, before_resume: bool = False) -> None:
        """Bad input fails here, before anything is read or written. `before_resume`: the saved
        config of a resume is still to be merged in, so checks across keys it supplies wait."""
        if self.steps <= 0:
            raise ValueError(f"steps={self.steps}: steps must be > 0")
        for name in ("seq_len", "batch_size", "grad_accum", "log_every", "eval_batches", "save_every",
                     "keep_last"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        if self.eval_every < 0 or self.warmup < 0:
            raise ValueError("eval_every and warmup must be >= 0")
        if self.batch_size % (self.grad_accum * world_size):
            raise ValueError(f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum} x "
                             f"{world_size} process(es): choose a batch_size that is a multiple of "
                             f"{self.grad_accum * world_size}")
        if self.dtype in ("fp16", "float16", "half"):
            raise ValueError(f"dtype={self.dtype}: fp16 is not supported (it needs loss scaling and overflows where "
                             "bf16 does not): use dtype=bf16 on hardware with bf16, else dtype=fp32")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype={self.dtype!r}: use auto, fp32 or bf16")
        if not (self.grad_clip >= 0):
            raise ValueError(f"grad_clip={self.grad_clip}: must be >= 0 (0 = no clipping)")
        if self.weight_decay < 0 or not (0 <= self.beta1 < 1) or not (0 <= self.beta2 < 1):
            raise ValueError(f"weight_decay={self.weight_decay}, beta1={self.beta1}, beta2={self.beta2}: need "
                             "weight_decay >= 0 and 0 <= beta < 1")
        if self.new_block_init not in ("random", "copy"):
            raise ValueError(f"new_block_init={self.new_block_init!r}: use random or copy")
        if self.freeze_blocks < 0:
            raise ValueError(f"freeze_blocks={self.freeze_blocks}: must be >= 0")
        check_lora(self.lora_rank, self.lora_alpha, None if before_resume else self.freeze_blocks)
        if self.fsdp and self.lora_rank:
            raise ValueError(f"fsdp=true with lora_rank={self.lora_rank}: LoRA growth is not sharded; use fsdp=false "
                             "(DDP) for it, or lora_rank=0")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other: pick one")
        if not (self.lr > 0) or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"lr={self.lr}, min_lr={self.min_lr}: need 0 <= min_lr <= lr and lr > 0")
        check_interface(self)
        D.normalize_weights(self.corpus)
        check_model_keys(self.model)
        width = self.model.get("hidden_size")
        if self.dim is not None and width is not None and int(width) != int(self.dim):
            raise ValueError(f"dim={self.dim} but model.hidden_size={width}: the embedding feeds the blocks "
                             "directly, so give one of them (or the same value)")


def interface_kind(cfg: TrainConfig) -> str:
    """The interface a config trains: `trainable` for frozen=false (the older spelling), else `interface`."""
    return "trainable" if not cfg.frozen or cfg.interface == "trainable" else cfg.interface


def check_interface(cfg: TrainConfig) -> None:
    """One line for an unknown kind, an option out of its choices, or frozen=false with a frozen code."""
    from bvvlab.glyph import interfaces as I

    I.check_kind(cfg.interface)
    if not cfg.frozen and cfg.interface not in ("glyph", "trainable"):
        raise ValueError(f"frozen=false asks for a trainable embedding but interface={cfg.interface} is a frozen code: "
                         "drop frozen=false, or use interface=trainable")
    if cfg.interface_order not in I.ORDERS:
        raise ValueError(f"interface_order={cfg.interface_order!r}: use one of {', '.join(I.ORDERS)}")
    if cfg.interface_values not in I.VALUES:
        raise ValueError(f"interface_values={cfg.interface_values!r}: use one of {', '.join(I.VALUES)}")
    if cfg.interface_dim is not None and cfg.interface_dim <= 0:
        raise ValueError(f"interface_dim={cfg.interface_dim}: give a positive number of bits (or none for the default)")
    width = cfg.dim or cfg.model.get("hidden_size") or _preset_width(cfg.preset)
    if cfg.interface_dim is not None and width and cfg.interface in I.CODED and int(width) % cfg.interface_dim:
        ok = ", ".join(str(k) for k in I.divisors(int(width)) if k >= 2)
        raise ValueError(f"interface_dim={cfg.interface_dim} does not divide the model width {width} (the code is "
                         f"widened by repeat_interleave(width / n)): use one of {ok}")
    if cfg.interface_scale is not None and not (math.isfinite(cfg.interface_scale) and cfg.interface_scale > 0):
        raise ValueError(f"interface_scale={cfg.interface_scale}: give a number > 0 (or none for unit-norm rows)")


def _preset_width(preset: str) -> int | None:
    from bvvlab.models.model import PRESETS

    return PRESETS.get(preset, {}).get("hidden_size")


def check_lora(rank: Any, alpha: Any = None, frozen: int | None = None) -> tuple[int, float | None]:
    """(rank, alpha) of a LoRA setting, or one line naming what is wrong and the fix: the rank is
    an integer >= 0 (0 = off), alpha a number > 0 or None (= rank), and with `frozen` given,
    a rank > 0 needs frozen blocks to adapt (LoRA updates only the frozen blocks)."""
    rank = _coerce("lora_rank", rank)  # not an integer: one line with the fix (TYPE_HINTS)
    if rank < 0:
        raise ValueError(f"lora_rank={rank}: give an integer >= 0 (0 = no LoRA), e.g. lora_rank=8")
    alpha = _coerce("lora_alpha", alpha)
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"lora_alpha={alpha!r}: give a number > 0 (the update is scaled by alpha / rank), or leave "
                         "it unset (= lora_rank, scale 1)")
    if rank and frozen == 0:
        raise ValueError(f"lora_rank={rank} but freeze_blocks=0: LoRA adapts the frozen blocks and none are frozen; "
                         "set freeze_blocks=N (or grow in stages), or lora_rank=0")
    return rank, alpha


def check_model_keys(model: dict[str, Any]) -> None:
    """`model.<field>` overrides must name BVVConfig fields: a typo (`model.hiden_size=3`) would
    otherwise become a stray config attribute and the run would train the preset unchanged."""
    from bvvlab.models.model import BVVConfig

    known = sorted(BVVConfig().to_dict())
    for key in model:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {', '.join(f'model.{c}' for c in close)}?" if close else \
                f"model fields: {', '.join(known)}"
            raise ValueError(f"model.{key} is not a BVVConfig field: {hint}")


# config from a file, the command line or a notebook


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


# what a type error of these keys adds to its line (the fix, where "expected an integer" is not enough)
TYPE_HINTS = {"lora_rank": " >= 0 (0 = no LoRA), e.g. lora_rank=8", "lora_alpha": " > 0, or none (= lora_rank)"}


def _coerce(name: str, value: Any) -> Any:
    """A TrainConfig value through the one coercion of every config (`bvvlab.core.config.coerce`):
    a CLI string, a file value or a notebook parameter as the field's type, or one line naming the
    key (papermill `-p steps abc` included). `corpus` also takes the trainer's "a:0.7,b:0.3"."""
    if name == "corpus" and isinstance(value, str) and not value.strip().startswith("{"):
        return D.normalize_weights(value)  # "a:0.7,b:0.3" or one name
    return coerce(name, value, typing.get_type_hints(TrainConfig)[name], TYPE_HINTS.get(name, ""))


def make_config(base: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a base and overrides; `model.X=...` keys go into the model overrides.
    An unknown key is an error that lists the valid keys."""
    if isinstance(base, TrainConfig):
        explicit = set(base._explicit if base._explicit is not None else config_keys())
    else:
        explicit = set(base or {}) | {f"model.{k}" for k in dict((base or {}).get("model") or {})}
    explicit |= set(overrides)
    cfg = dataclasses.asdict(base) if isinstance(base, TrainConfig) else dict(base or {})
    cfg = {**dataclasses.asdict(TrainConfig()), **cfg}
    cfg["model"] = dict(cfg.get("model") or {})
    valid = config_keys()
    for key, value in overrides.items():
        if key.startswith("model."):
            sub = key[len("model."):]
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            cfg["model"][sub] = value
            continue
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)} (and model.<field>)")
        cfg[key] = _coerce(key, value)
    unknown = set(cfg) - set(valid)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; valid keys: {', '.join(valid)}")
    out = TrainConfig(**{k: _coerce(k, v) for k, v in cfg.items()})
    out._explicit = frozenset(explicit)
    return out


# what a resume may change besides `steps` (extending a run): nothing here alters the numbers trained
RESUME_MAY_CHANGE = ("log_every", "eval_every", "save_every", "keep_last", "progress", "tensorboard", "device",
                     "shard_dir", "out", "resume", "overwrite")


# the TrainConfig fields that decide the model (named as such in resume errors)
_MODEL_KEYS = ("preset", "model", "frozen", "vocab", "dim", "interface", "interface_dim", "interface_order",
               "interface_values", "interface_scale", "interface_seed")


def saved_config(out: str | Path) -> dict[str, Any] | None:
    """The TrainConfig (as a dict) the run in `out` saved with its last checkpoint; None if none."""
    from bvvlab.models import checkpoints as C

    ckpt = C.last_checkpoint(out)
    return None if ckpt is None else C.read_trainer_meta(ckpt).get("config")


def resume_config(cfg: TrainConfig) -> TrainConfig:
    """The config a resume of `cfg.out` runs with: the saved config, with only the keys given
    explicitly (`cfg._explicit`; all keys for a TrainConfig built by hand) applied over it.
    Explicit keys other than `steps` and RESUME_MAY_CHANGE must equal the saved values: changing
    data, schedule or model halfway would silently mix two runs under one sampler state."""
    saved = saved_config(cfg.out)
    if saved is None:
        return cfg
    keys = config_keys()
    explicit = cfg._explicit if cfg._explicit is not None else frozenset(keys)
    mine = dataclasses.asdict(cfg)
    base = {**dataclasses.asdict(TrainConfig()), **{k: v for k, v in saved.items() if k in keys}}
    merged = {**base, "model": dict(base.get("model") or {})}
    for key in explicit:
        if key.startswith("model."):
            sub = key[len("model."):]
            if sub in cfg.model:
                merged["model"][sub] = cfg.model[sub]
        elif key in mine:
            merged[key] = dict(mine[key]) if key == "model" else mine[key]
    merged.update(out=cfg.out, resume=True, overwrite=False)
    changed: list[str] = []
    for key in keys:
        if key in RESUME_MAY_CHANGE or key == "steps":
            continue
        a, b = base[key], merged[key]
        if key == "corpus":
            a, b = D.normalize_weights(a), D.normalize_weights(b)
        if key == "model":
            changed += [f"model.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    if changed:
        what = "model config" if any(k.split(".")[0] in _MODEL_KEYS for k in changed) else "config"

        def was(k: str) -> Any:
            return base["model"].get(k[len("model."):]) if k.startswith("model.") else base[k]

        raise ValueError(f"{cfg.out} was trained with a different {what}: "
                         f"{', '.join(f'{k} (saved {was(k)!r})' for k in changed)} differ; a resume may change "
                         f"only steps and {', '.join(RESUME_MAY_CHANGE[:-3])}: drop those keys or choose a new out=")
    new = TrainConfig(**merged)
    new._explicit = explicit
    return new


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file of TrainConfig keys."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from None
