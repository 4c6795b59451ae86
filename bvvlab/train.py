"""The trainer: one loop for a laptop CPU and for GPUs, with exact resume (issue 5).

`train(cfg)` trains the model of `bvv-recipe.md` section 4 (frozen glyph embedding, or its
trainable twin) on a token-shard mixture (`bvvlab.data`) and writes a run directory:

    out/meta.json              config, git commit, versions, device, data, seed, final metrics
    out/metrics.jsonl          one JSON record per log / eval step
    out/checkpoints/step_N/    a Hugging Face checkpoint dir + trainer_state.pt (optimizer,
                               scheduler, step, batch-sampler and every RNG state)

Why each piece:
- AdamW + linear warmup + cosine decay + clipping: the usual recipe (the seed's optimiser is not
  published, recipe section 4), fused AdamW and bf16 autocast on CUDA, fp32 on CPU by default.
- Exact resume: everything that decides the next step is saved (weights, optimiser, scheduler,
  sampler generator, python/numpy/torch RNG), so on CPU a resumed run ends bit-identical to an
  uninterrupted one. Checkpoints are written under a temporary name and renamed. A resume starts
  from the config the run saved and applies only the keys given explicitly; of those, only
  `steps` (to extend the run) and the keys in `RESUME_MAY_CHANGE` (logging, saving, device) may
  differ, anything else is refused. Extending `steps` recomputes the cosine over the new total,
  so the learning rate from the resumed step on is not what the shorter run would have used.
- DDP through torchrun: every rank draws the same global batch and takes its slice; the
  per-rank loss is averaged by DDP, so N processes follow the one-process curve.
- Validation bits per character: sum of target-token NLL in bits over the characters those
  targets cover; tokenizer-independent, so frozen/unfrozen/compact/full runs compare fairly.
- SIGINT/SIGTERM save a checkpoint after the current step and exit cleanly; a non-finite loss
  (or gradient norm) stops the run before the bad update, naming the step and the learning rate.

Command line (a config file, then flags, then `key=value` overrides; `model.<field>=` for the
model config):

    bvvlab train --preset tiny --steps 20 --out runs/smoke
    bvvlab train --config configs/tiny.json frozen=false lr=2e-3 corpus=libreoffice-en-ru:0.7,concepts:0.3 \
        train_chars=2000000
    bvvlab train --out runs/smoke --resume steps=40          # continue (and extend) a run
    torchrun --nproc_per_node 2 -m bvvlab train --config configs/tiny.json   # DDP: Gloo on CPU, NCCL on GPU
    bvvlab compare --preset tiny --steps 200 --out runs/twins   # frozen + unfrozen twins, curves to figures/
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bvvlab import data as D
from bvvlab.runinfo import REPO_ROOT, cache_dir, run_meta, write_json_atomic

STATE_FILE = "trainer_state.pt"
CKPT_PREFIX = "step_"

# dense bf16 peak FLOP/s per device (vendor data sheets, no sparsity); MFU is reported only for these
PEAK_FLOPS_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # the SXM part reports itself as "NVIDIA H100 80GB HBM3"
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


@dataclass
class TrainConfig:
    """Everything one training run depends on (saved in meta.json; `key=value` on the CLI)."""

    preset: str = "tiny"  # model preset of bvvlab.model.PRESETS
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's config fields (HF names)
    frozen: bool = True  # frozen glyph embedding (True) or its trainable, randomly initialised twin
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
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16" (autocast)
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
    progress: bool = True  # tqdm bars

    # not a field (never saved or compared): the keys make_config was given explicitly ("model.<f>"
    # for a model override); a resume applies only these over the saved config. None = every key.
    _explicit = None

    def validate(self, world_size: int = 1) -> None:
        """Bad input fails here, before anything is read or written."""
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
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype={self.dtype!r}: use auto, fp32 or bf16")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other: pick one")
        if not (self.lr > 0) or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"lr={self.lr}, min_lr={self.min_lr}: need 0 <= min_lr <= lr and lr > 0")
        D.normalize_weights(self.corpus)
        check_model_keys(self.model)
        width = self.model.get("hidden_size")
        if self.dim is not None and width is not None and int(width) != int(self.dim):
            raise ValueError(f"dim={self.dim} but model.hidden_size={width}: the embedding feeds the blocks "
                             "directly, so give one of them (or the same value)")


def check_model_keys(model: dict[str, Any]) -> None:
    """`model.<field>` overrides must name BVVConfig fields: a typo (`model.hiden_size=3`) would
    otherwise become a stray config attribute and the run would train the preset unchanged."""
    import difflib

    from bvvlab.model import BVVConfig

    known = sorted(BVVConfig().to_dict())
    for key in model:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {', '.join(f'model.{c}' for c in close)}?" if close else \
                f"model fields: {', '.join(known)}"
            raise ValueError(f"model.{key} is not a BVVConfig field: {hint}")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: the run stops; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# config from file / CLI


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _coerce(name: str, value: Any) -> Any:
    """Turn a CLI string (or a file value) into the field's type."""
    hint = typing.get_type_hints(TrainConfig)[name]
    if not isinstance(value, str):
        return value
    if typing.get_origin(hint) is dict:  # corpus, model
        if value.strip().startswith("{"):
            return json.loads(value)
        if name == "corpus":
            return D.normalize_weights(value)  # "a:0.7,b:0.3" or one name
        raise ValueError(f"{name}={value!r}: expected a JSON object")
    args = [a for a in typing.get_args(hint) if a is not type(None)]  # X | None -> X
    if value.lower() in ("none", "null") and len(args) < len(typing.get_args(hint)):
        return None
    base = args[0] if args else hint
    if base is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={value!r}: expected true or false")
    if base is int:
        try:
            return int(value)
        except ValueError:
            try:
                as_float = float(value)  # 1e6
            except ValueError:
                as_float = math.nan
            if as_float.is_integer():
                return int(as_float)
            raise ValueError(f"{name}={value!r}: expected an integer") from None
    if base is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected a number") from None
    return value


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
                     "out", "resume", "overwrite")


def saved_config(out: str | Path) -> dict[str, Any] | None:
    """The TrainConfig (as a dict) the run in `out` saved with its last checkpoint; None if none."""
    ckpt = last_checkpoint(out)
    if ckpt is None:
        return None
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False, mmap=True)
    return state.get("config")


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


# ---------------------------------------------------------------------------------------------
# small pieces


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr` over `warmup` steps, then cosine decay to `min_lr` at `steps`."""
    warmup = min(cfg.warmup, cfg.steps // 5)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def peak_flops(device: torch.device) -> float | None:
    """bf16 peak of a known CUDA device; None (no MFU) for CPUs and unknown devices."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS_BF16[key]
    return None


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """6N (N = parameters in matmuls: not the embedding lookup) + attention 12 * L * d * T (PaLM, app. B)."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    if isinstance(getattr(emb, "weight", None), torch.nn.Parameter):
        n -= emb.weight.numel()
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (renamed into place, so complete by construction), oldest first."""
    root = out / "checkpoints"
    if not root.exists():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX) and (p / STATE_FILE).exists()]
    return sorted(dirs, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def clean_leftovers(out: str | Path) -> list[str]:
    """Remove what a save killed mid-way left in `out/checkpoints`: `.tmp-step_N-<pid>` (a checkpoint
    being written: incomplete) and `.old-step_N-<pid>` (the previous copy of a re-saved step). An
    `.old-` copy whose step has no checkpoint any more (killed between the two renames) is complete,
    so it is renamed back instead. Returns the names removed. Without this they stay forever."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".old-"):
            name = p.name[len(".old-"):].rsplit("-", 1)[0]
            if name.startswith(CKPT_PREFIX) and not (root / name).exists() and (p / STATE_FILE).exists():
                os.replace(p, root / name)
                continue
        if p.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


def last_checkpoint(out: str | Path) -> Path | None:
    ckpts = _checkpoints(Path(out))
    return ckpts[-1] if ckpts else None


def _holds_run(out: Path) -> bool:
    return out.exists() and any((out / n).exists() for n in ("meta.json", "metrics.jsonl", "checkpoints"))


# the model config fields that must agree for a resume to make sense
_CONFIG_IGNORE = {"transformers_version", "dtype", "torch_dtype", "auto_map", "architectures", "_name_or_path",
                  "use_cache", "output_hidden_states", "output_attentions", "return_dict",
                  # filled in from the matrix / tokenizer when the model is built and saved
                  "embedding_hash", "bos_token_id", "eos_token_id", "pad_token_id"}
# the TrainConfig fields that decide the model (named as such in resume errors)
_MODEL_KEYS = ("preset", "model", "frozen", "vocab", "dim")


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = (set(a) | set(b)) - _CONFIG_IGNORE
    return sorted(k for k in keys if a.get(k) != b.get(k))


# ---------------------------------------------------------------------------------------------
# model and data


def _resolve_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _compact_cache_key(dim: int, texts: list[str]) -> str:
    """Everything a compact vocabulary is made of: the code that builds it, the font, the embedded
    corpora the base n-grams come from, the width and the training texts."""
    from bvvlab import corpora, embeddings, font, glyphs
    from bvvlab import tokenizer as tk

    h = hashlib.sha256()
    for module in (tk, embeddings, glyphs, font, corpora):
        D._hash_path(Path(module.__file__), h)
    h.update(font.font_sha256().encode())
    for name in tk.DEFAULT_CORPORA:
        h.update(D.source_fingerprint(name).encode())
    h.update(f"compact:{dim}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:24]


def prepare_embedded(cfg: TrainConfig, texts: list[str] | None) -> Any:
    """The tokenizer + glyph matrix (recipe sections 2-3) for `cfg.vocab`.

    A compact vocabulary is cached under `cache_dir()/vocab/<key>` (a saved `Embedded`, keyed by
    content), so runs on the same text (twins, resumed or repeated runs) skip rebuilding it.
    """
    from bvvlab import embeddings as E

    vocab = cfg.vocab
    p = Path(vocab).expanduser()
    if p.is_dir() and (p / "glyph_matrix.safetensors").exists():
        embedded = E.load_embedded(p)
        width = int(embedded.matrix.shape[1])
        for name, asked in (("dim", cfg.dim), ("model.hidden_size", cfg.model.get("hidden_size"))):
            if asked is not None and int(asked) != width:  # the saved matrix decides the width: say so
                raise ValueError(f"{name}={asked} but the embedding in {p} is {width} wide: drop {name}= (the "
                                 f"model takes the matrix's width) or rebuild the embedding with dim={asked}")
        return embedded
    if vocab != "compact" or texts is None:
        return E.prepare_vocabulary(vocab, dim=model_dim(cfg), texts=texts, progress=cfg.progress)
    root = cache_dir() / "vocab"
    final = root / _compact_cache_key(model_dim(cfg), texts)
    if (final / "glyph_matrix.safetensors").exists():
        return E.load_embedded(final)
    embedded = E.prepare_vocabulary(vocab, dim=model_dim(cfg), texts=texts, progress=cfg.progress)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}-"))
    try:
        embedded.save(tmp / "e")
        if not final.exists():  # another process may have finished the same entry first
            os.replace(tmp / "e", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return embedded


def model_dim(cfg: TrainConfig) -> int:
    """The glyph matrix's width: `dim`, else the model's hidden_size (the embedding feeds the blocks)."""
    from bvvlab import model as M

    if cfg.dim is not None:
        return int(cfg.dim)
    if "hidden_size" in cfg.model:
        return int(cfg.model["hidden_size"])
    if cfg.preset not in M.PRESETS:
        raise ValueError(f"unknown model preset {cfg.preset!r}; choose one of {', '.join(M.PRESETS)}")
    return int(M.PRESETS[cfg.preset]["hidden_size"])


def build_model_config(cfg: TrainConfig, embedded: Any) -> Any:
    """The preset's config with the trainer's overrides: vocab and width from the matrix, `frozen`."""
    from bvvlab import model as M

    overrides = dict(cfg.model)
    overrides["vocab_size"] = int(embedded.matrix.shape[0])
    overrides["hidden_size"] = int(embedded.matrix.shape[1])
    overrides["frozen_embedding"] = cfg.frozen
    for name in ("pad", "bos", "eos"):  # recorded in meta.json as config.json will hold them
        tid = getattr(embedded.tokenizer, f"{name}_token_id", None)
        if tid is not None:
            overrides[f"{name}_token_id"] = int(tid)
    return M.config_from_preset(cfg.preset, **overrides)


EMBED_KEY = "model.embed_tokens.weight"


def build_model(cfg: TrainConfig, embedded: Any) -> torch.nn.Module:
    """A fresh model of `cfg.preset` (+ overrides) over the embedded vocabulary, initialised from
    `cfg.seed` alone.

    The frozen and the unfrozen twin start from the same transformer: a trainable nn.Embedding
    draws its init from the RNG before the blocks do, so building the unfrozen model directly would
    give every Linear and the head other weights, and the comparison would mix the embedding's
    effect with an init lottery. So the unfrozen twin takes every tensor but the embedding from the
    frozen-architecture model of the same seed; its embedding keeps its own seeded init.
    """
    from bvvlab import model as M

    config = build_model_config(cfg, embedded)
    torch.manual_seed(cfg.seed)
    if config.frozen_embedding:
        return M.BVVForCausalLM.from_glyphs(config, embedded.matrix)
    reference = M.BVVForCausalLM.from_glyphs(build_model_config(dataclasses.replace(cfg, frozen=True), embedded),
                                             embedded.matrix)
    torch.manual_seed(cfg.seed)
    model = M.BVVForCausalLM.from_glyphs(config, embedded.matrix)
    shared = {k: v for k, v in reference.state_dict().items() if k != EMBED_KEY}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    assert missing == [EMBED_KEY] and not unexpected, (missing, unexpected)
    return model


def embedding_hash(model: torch.nn.Module) -> str:
    """sha256 of the input matrix, as the model records it in `config.embedding_hash`."""
    from bvvlab.model import matrix_sha256

    return matrix_sha256(model.get_input_embeddings().weight.detach())


def lm_loss(model: torch.nn.Module, window: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of (B, T) windows (HF convention: position t predicts t+1, so
    T-1 targets per row), through the model's chunked loss (the full logits never exist).
    `reduction="sum"` gives the summed NLL in nats."""
    kw = {"num_items_in_batch": 1} if reduction == "sum" else {}
    return model(input_ids=window, labels=window, **kw).loss


@torch.no_grad()
def evaluate_bpc(model: torch.nn.Module, shard: D.TokenShard, seq_len: int, n_windows: int | None, batch: int,
                 device: torch.device, autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, float]:
    """Validation loss (nats per token) and bits per character over the first `n_windows` windows
    (None: the whole shard, every token after the first a target once); `val_chars` says how many
    characters that was.

    bits/char = sum over targets of -log2 p(target) / characters those targets cover (every
    character of the evaluated text counted once, EOS covers none).
    """
    was_training = model.training
    model.eval()
    nll = 0.0
    n_tok = n_chars = 0
    pending: list[tuple[torch.Tensor, int]] = []

    def flush() -> None:
        nonlocal nll, n_tok, n_chars
        lens = {w.shape[0] for w, _ in pending}
        groups = [pending] if len(lens) == 1 else [[p] for p in pending]
        for g in groups:
            ids = torch.stack([w for w, _ in g]).to(device)
            with autocast():
                nll += float(lm_loss(model, ids, reduction="sum"))
            n_tok += ids.shape[0] * (ids.shape[1] - 1)
            n_chars += sum(c for _, c in g)
        pending.clear()

    for w, c in D.eval_windows(shard, seq_len, n_windows):
        pending.append((w, c))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    model.train(was_training)
    return {"val_loss": nll / max(1, n_tok), "val_bpc": nll / math.log(2) / max(1, n_chars),
            "val_tokens": n_tok, "val_chars": n_chars}


# ---------------------------------------------------------------------------------------------
# checkpoints


@contextlib.contextmanager
def _quiet_hf() -> Any:
    """No transformers progress bars (loading / writing weights) inside the trainer."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def save_trainer_checkpoint(out: Path, step: int, model: torch.nn.Module, tokenizer: Any, state: dict[str, Any],
                            meta: dict[str, Any], keep_last: int, expected_hash: str | None) -> Path:
    """HF checkpoint dir + trainer state, written under a temporary name and renamed into place."""
    from bvvlab import model as M

    if expected_hash is not None:
        got = embedding_hash(model)
        if got != expected_hash:
            raise RuntimeError(f"frozen glyph matrix changed at step {step} (hash {got[:12]} != {expected_hash[:12]}): "
                               "nothing may write to the frozen embedding; checkpoint not saved")
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CKPT_PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_hf():  # a "Writing model shards" bar per checkpoint would break the train bar
        M.save_checkpoint(model, tokenizer, tmp, meta)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save)
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    for stale in _checkpoints(out)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


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


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def train(cfg: TrainConfig, callback: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train per `cfg`; return the final checkpoint directory (a Hugging Face model dir).

    `callback(record)` is called on rank 0 with every metrics record (live plots). Under torchrun
    (WORLD_SIZE > 1) the process group is set up here (NCCL on GPU, Gloo on CPU).
    """
    rank, local_rank, world = _dist_info()
    cfg.validate(world)
    if cfg.tensorboard:
        try:
            importlib.import_module("torch.utils.tensorboard")  # (a plain import would make `torch` local)
        except ImportError:
            raise ValueError("tensorboard=true needs the tensorboard package: pip install tensorboard "
                             "(it is in bvvlab's dev extra)") from None
    if cfg.resume:
        cfg = resume_config(cfg)
        cfg.validate(world)
    out = Path(cfg.out)
    if _holds_run(out) and not (cfg.resume or cfg.overwrite):
        raise FileExistsError(f"{out} already holds a run: pass resume=true to continue it, overwrite=true to "
                              "replace it, or choose another out=")
    device = _resolve_device(cfg, local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} but torch sees no CUDA device: use device=cpu (or auto)")
    dist = world > 1
    if dist:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # share the cores, don't fight
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        return _train(cfg, callback, out, device, rank, world)
    finally:
        if dist:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def _train(cfg: TrainConfig, callback: Callable[[dict[str, Any]], None] | None, out: Path, device: torch.device,
           rank: int, world: int) -> Path:
    from tqdm.auto import tqdm

    t_start = time.time()
    is_main = rank == 0
    weights = D.normalize_weights(cfg.corpus)
    if is_main and (cfg.resume or cfg.overwrite):  # a run killed while saving left these behind
        clean_leftovers(out)
    _barrier(world)
    resume_from = last_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None and is_main:  # the preemptible-job pattern: always pass --resume
        print(f"bvvlab train: no checkpoint in {out} to resume from; starting a fresh run", file=sys.stderr,
              flush=True)

    # vocabulary + model: from the checkpoint when resuming (exactly what was trained), else fresh
    seed_everything(cfg.seed)
    if resume_from is not None:
        from bvvlab import model as M

        with _quiet_hf():
            model, tokenizer = M.load_checkpoint(resume_from)
        prev = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
        embedded = _EmbeddedView(tokenizer, model.get_input_embeddings().weight.detach(),
                                 prev.get("matrix_hash"), prev.get("frozen_hash"), prev.get("embedding"))
        new_cfg = build_model_config(cfg, embedded).to_dict()
        diff = _config_diff(new_cfg, model.config.to_dict())  # the checkpoint itself (resume_config checked cfg)
        if diff:
            raise ValueError(f"{out} was trained with a different model config ({', '.join(diff)} differ): "
                             "use the same preset/model/vocab/frozen settings, or a new out=")
        model.train()
    else:
        texts = None
        if cfg.vocab == "compact":  # the compact vocabulary covers the training text (recipe section 2)
            budget = D.resolve_max_chars(weights, "train", cfg.train_chars, cfg.seed)
            texts = list(D.take_chars(D.iter_texts(weights, "train", cfg.seed), budget))
            if not texts:
                raise ValueError(f"corpus {', '.join(weights)} has no text in split 'train': point corpus= at a "
                                 "source with text")
        if is_main:
            embedded = prepare_embedded(cfg, texts)
        _barrier(world)
        if not is_main:
            embedded = prepare_embedded(cfg, texts)
        model = build_model(cfg, embedded)
        tokenizer = embedded.tokenizer
    if cfg.seq_len > model.config.max_position_embeddings:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's context of {model.config.max_position_embeddings} "
                         f"tokens: use seq_len<={model.config.max_position_embeddings} or "
                         "model.max_position_embeddings=...")
    matrix_hash = getattr(embedded, "matrix_hash", None)
    frozen_hash = embedding_hash(model) if cfg.frozen else None
    recorded = getattr(embedded, "frozen_hash", None)
    if cfg.frozen and resume_from is not None and recorded and frozen_hash != recorded:
        raise RuntimeError(f"frozen glyph matrix of {resume_from} does not match the hash the run recorded in "
                           "meta.json: the checkpoint was altered; resume from an intact copy")

    # data: rank 0 tokenises, the others open the cached shards
    shards = {}
    for split, mixture, limit in (("train", weights, cfg.train_chars),
                                  (cfg.val_split, D.held_out_weights(weights), cfg.val_chars)):
        if is_main:
            shards[split] = D.build_shard(mixture, tokenizer, split, max_chars=limit, seed=cfg.seed,
                                          progress=cfg.progress)
        _barrier(world)
        if not is_main:
            shards[split] = D.build_shard(mixture, tokenizer, split, max_chars=limit, seed=cfg.seed, progress=False)
    train_shard, val_shard = shards["train"], shards[cfg.val_split]

    model.to(device)
    micro = cfg.batch_size // (cfg.grad_accum * world)
    sampler = D.BatchSampler(train_shard, cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world)

    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)

    step = 0
    tokens_seen = 0
    if resume_from is not None:
        state = torch.load(resume_from / STATE_FILE, map_location="cpu", weights_only=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
        set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        if step >= cfg.steps:
            return resume_from

    fwd_model: torch.nn.Module = model
    ddp: Any = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # the frozen matrix is a constant buffer: re-broadcasting it every forward would only cost bandwidth
        fwd_model = ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                              forward_sync_buffers=False)
    if cfg.compile:
        fwd_model = torch.compile(fwd_model)
    autocast = lambda: _autocast(cfg, device)  # noqa: E731
    peak = peak_flops(device)
    fpt = flops_per_token(model, cfg.seq_len)
    n_params = sum(p.numel() for p in model.parameters())

    # the run directory: written only now, when data and model are known to be good
    metrics_path = out / "metrics.jsonl"
    # embedding: where the glyph matrix came from (recipe params, font hash, glyph rule, dim, base
    # vocabulary, full-matrix hash), so a figure traces back to the exact embedding
    meta = run_meta(cfg, seed=cfg.seed, world_size=world, matrix_hash=matrix_hash, frozen_hash=frozen_hash,
                    embedding=getattr(embedded, "meta", None),
                    data={"train": train_shard.meta, "validation": val_shard.meta},
                    model={"config": model.config.to_dict(), "trainable_params": n_params,
                           "flops_per_token": fpt})
    writer = None
    if is_main:
        if resume_from is None and (cfg.overwrite or cfg.resume) and out.exists():
            # replacing a run, or "resuming" one that died before its first checkpoint: its records are void
            for name in ("checkpoints", "tb"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("meta.json", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        if resume_from is not None and (out / "meta.json").exists():
            meta = {**json.loads((out / "meta.json").read_text()), "resumed": meta}
        write_json_atomic(out / "meta.json", meta)
        _truncate_metrics(metrics_path, step)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
    records: list[dict[str, Any]] = []

    def emit(rec: dict[str, Any]) -> None:
        if not is_main:
            return
        records.append(rec)
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        if writer is not None:
            for k, v in rec.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and v is not None:
                    writer.add_scalar(k, v, rec["step"])
        if callback is not None:
            callback(rec)

    timers = {"eval_s": 0.0, "eval_cpu_s": 0.0, "save_s": 0.0}

    def run_eval(final: bool = False) -> None:
        """Periodic: the first eval_batches x batch_size windows (cheap, comparable along the run);
        final: the whole validation shard, so the reported figure is the split's, not a sample's."""
        if is_main:
            t0, c0 = time.perf_counter(), time.process_time()
            ev = evaluate_bpc(model, val_shard, cfg.seq_len, None if final else cfg.eval_batches * cfg.batch_size,
                              micro, device, autocast)
            ev["val_full"] = final
            timers["eval_s"] += time.perf_counter() - t0
            timers["eval_cpu_s"] += time.process_time() - c0
            emit({"kind": "eval", "step": step, "tokens": tokens_seen, **ev})

    def trainer_state() -> dict[str, Any]:
        rngs: Any = rng_state()
        if world > 1:
            import torch.distributed as tdist

            gathered: list[Any] = [None] * world
            tdist.all_gather_object(gathered, rngs)
            rngs = gathered
        return {"step": step, "tokens_seen": tokens_seen, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "sampler": sampler.state_dict(), "rng": rngs,
                "config": dataclasses.asdict(cfg)}

    def save() -> Path:
        t0 = time.perf_counter()
        st = trainer_state()  # collective under DDP: every rank takes part
        path = out / "checkpoints" / f"{CKPT_PREFIX}{step:07d}"
        if is_main:
            ckpt_meta = {**meta, "step": step, "tokens_seen": tokens_seen}
            path = save_trainer_checkpoint(out, step, model, tokenizer, st, ckpt_meta, cfg.keep_last, frozen_hash)
        _barrier(world)
        timers["save_s"] += time.perf_counter() - t0
        return path

    if step == 0 and cfg.eval_every > 0:
        run_eval()

    tokens_per_step = cfg.batch_size * cfg.seq_len
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not (cfg.progress and is_main),
               dynamic_ncols=True)
    last_path: Path | None = None
    busy, tok_log = 0.0, 0  # seconds spent in training steps (no eval, no saving) since the last record
    model.train()
    t_loop, c_loop, step0 = time.perf_counter(), time.process_time(), step
    with _Signals() as sig:
        while step < cfg.steps:
            t_step = time.perf_counter()
            lr = sched.get_last_lr()[0]
            loss_sum = torch.zeros((), device=device)
            # this rank's rows of the global batch, cut into grad_accum micro-batches: any
            # (processes x accumulation) split of one global batch sees the same windows
            rows = sampler.next_batch().to(device, non_blocking=True)
            for micro_step, window in enumerate(rows.chunk(cfg.grad_accum)):
                sync = micro_step == cfg.grad_accum - 1
                ctx = ddp.no_sync() if (ddp is not None and not sync) else contextlib.nullcontext()
                with ctx, autocast():
                    loss = lm_loss(fwd_model, window) / cfg.grad_accum
                loss.backward()
                loss_sum += loss.detach()
            if world > 1:
                import torch.distributed as tdist

                tdist.all_reduce(loss_sum, op=tdist.ReduceOp.AVG)
            loss_val = float(loss_sum)
            if not math.isfinite(loss_val):
                bar.close()
                good = last_checkpoint(out)
                raise NonFiniteLoss(f"loss is {loss_val} at step {step + 1} (lr {lr:.3g}); the run stopped, "
                                    f"last good checkpoint: {good or 'none'}; lower lr= or raise warmup=")
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if not math.isfinite(float(gnorm)):  # a finite loss can still overflow in backward
                bar.close()
                raise NonFiniteLoss(f"gradient norm is {float(gnorm)} at step {step + 1} (lr {lr:.3g}); the run "
                                    f"stopped, last good checkpoint: {last_checkpoint(out) or 'none'}; lower lr= "
                                    "or raise warmup=")
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            tokens_seen += tokens_per_step
            tok_log += tokens_per_step
            busy += time.perf_counter() - t_step
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                tps = tok_log / max(busy, 1e-9)
                rec = {"kind": "train", "step": step, "tokens": tokens_seen, "loss": loss_val, "lr": lr,
                       "grad_norm": float(gnorm), "tok_per_s": tps}
                if peak is not None:
                    rec["mfu"] = fpt * tps / (peak * world)
                emit(rec)
                bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
                busy, tok_log = 0.0, 0
            if step == cfg.steps:
                run_eval(final=True)
            elif cfg.eval_every and step % cfg.eval_every == 0:
                run_eval()
            stop = sig.received is not None
            if world > 1:  # every rank must stop at the same step
                import torch.distributed as tdist

                flag = torch.tensor([1.0 if stop else 0.0], device=device)  # NCCL reduces CUDA tensors
                tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
                stop = bool(flag.item())
            if step % cfg.save_every == 0 or step == cfg.steps or stop:
                last_path = save()
            if stop:
                if is_main:
                    print(f"bvvlab train: {sig.received or 'signal'} received; saved {last_path}, stopping at "
                          f"step {step}", flush=True)
                break
    loop_s, loop_cpu_s = time.perf_counter() - t_loop, time.process_time() - c_loop
    bar.close()
    if writer is not None:
        writer.close()
    if is_main and step == cfg.steps:
        final = {k: v for r in records for k, v in r.items() if k not in ("kind",)}
        # loop_s: the whole loop (steps, data, logging, evals, saves) of this process, for bench/
        meta["final"] = {"step": step, "tokens_seen": tokens_seen, "wall_s": time.time() - t_start,
                         "loop_s": loop_s, "loop_cpu_s": loop_cpu_s, "loop_steps": step - step0, **timers,
                         **{k: final[k] for k in ("loss", "val_loss", "val_bpc", "val_chars", "val_tokens", "tok_per_s",
                                                  "mfu") if k in final}}
        meta["checkpoint"] = str(last_path)
        write_json_atomic(out / "meta.json", meta)
    assert last_path is not None
    return last_path


@dataclass
class _EmbeddedView:
    """What the trainer needs of an `Embedded` when it resumes from a checkpoint."""

    tokenizer: Any
    matrix: torch.Tensor
    matrix_hash: str | None  # embeddings.matrix_hash of the glyph matrix, as recorded at the start
    frozen_hash: str | None  # model.matrix_sha256 of the frozen buffer, as recorded at the start
    meta: dict[str, Any] | None = None  # the Embedded's provenance (recipe params, font, hash), as recorded


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
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# frozen vs unfrozen


def figure_slug(out: str | Path) -> str:
    """A file-name-safe name for a run directory from its whole path (relative to the repository
    or the working directory when inside one): `runs/a/twins` -> `runs_a_twins`."""
    path = Path(out).resolve()
    for root in (REPO_ROOT, Path.cwd()):
        with contextlib.suppress(ValueError):
            path = path.relative_to(root.resolve())
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.as_posix()).strip("_.") or "run"


def compare(cfg: TrainConfig, figures: str | Path | None = None) -> Path:
    """Train the frozen and the unfrozen twin (same seed, data order, schedule) under `cfg.out`
    (`frozen/`, `unfrozen/`), write overlaid curves to `cfg.out/compare.html` and
    `figures/compare_<slug of cfg.out>.html`, and `compare.json`; return `cfg.out`."""
    from bvvlab import plots

    out = Path(cfg.out)
    results = {}
    for name, frozen in (("frozen", True), ("unfrozen", False)):
        twin = dataclasses.replace(cfg, frozen=frozen, out=str(out / name))
        twin._explicit = None if cfg._explicit is None else cfg._explicit | {"frozen", "out"}
        ckpt = train(twin)
        results[name] = {"checkpoint": str(ckpt), "metrics": read_metrics(twin.out)}
    fig_dir = Path(figures) if figures is not None else REPO_ROOT / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig = plots.training_curves({k: v["metrics"] for k, v in results.items()},
                                title=f"frozen vs unfrozen: {cfg.preset}, {cfg.steps} steps, seed {cfg.seed}")
    # "directory": plotly.min.js is written once beside the html, so the figure draws offline
    # ("cdn" left it blank without a network); one copy with the run, one in figures/ named
    # after the whole out path (a/twins and b/twins must not overwrite each other)
    fig.write_html(out / "compare.html", include_plotlyjs="directory")
    fig_path = fig_dir / f"compare_{figure_slug(out)}.html"
    fig.write_html(fig_path, include_plotlyjs="directory")
    summary = {name: {"checkpoint": r["checkpoint"],
                      "final": json.loads((out / name / "meta.json").read_text()).get("final", {})}
               for name, r in results.items()}
    write_json_atomic(out / "compare.json", {"config": cfg, "figure": str(fig_path), "runs": summary})
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = load_config_file(args.config) if args.config else {}
    overrides: dict[str, Any] = {}
    for flag in ("preset", "steps", "out"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    for flag in ("resume", "overwrite"):
        if getattr(args, flag):
            overrides[flag] = True
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value; valid keys: {', '.join(config_keys())}")
        overrides[key.strip()] = value
    unknown = [k for k in base if k not in config_keys()]
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {args.config}; valid keys: {', '.join(config_keys())}")
    return make_config(base, **overrides)


def _run_cli(fn: Callable[[TrainConfig], Path], args: argparse.Namespace) -> int:
    from bvvlab.cli import CLIError

    cfg = config_from_args(args)
    try:  # corpus errors (e.g. a non-UTF-8 file) are ValueErrors: cli prints them as one line too
        path = fn(cfg)
    except NonFiniteLoss as exc:
        raise CLIError(str(exc)) from None
    if _dist_info()[0] == 0:
        print(path)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON or TOML file of TrainConfig keys")
    p.add_argument("--preset", help="model preset (same as preset=...)")
    p.add_argument("--steps", type=int, help="optimizer steps (same as steps=...)")
    p.add_argument("--out", help="run directory (same as out=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="TrainConfig fields (" + ", ".join(config_keys()) + "); model.<field>=v for model overrides")


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a model (torchrun --nproc_per_node N -m bvvlab train for DDP)",
                              description="Train a BVV model; prints the final checkpoint directory.")
    _add_common(p)
    p.set_defaults(func=lambda a: _run_cli(train, a))
    c = subparsers.add_parser("compare", help="train frozen and unfrozen twins and plot their curves",
                              description="Frozen vs unfrozen twins under --out; curves to figures/.")
    _add_common(c)
    c.set_defaults(func=lambda a: _run_cli(compare, a))
