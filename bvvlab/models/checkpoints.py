"""Checkpoint directories: save, load, resolve, list, verify and clean.

One checkpoint directory is the unit everything exchanges: `config.json` (with
`auto_map`), the self-contained modeling file, `model.safetensors` (the frozen glyph buffer
included), tokenizer files, `generation_config.json` and `meta.json`. A trainer checkpoint
(`RUN/checkpoints/step_N/`) also holds `trainer_state.safetensors`: optimizer, scheduler,
sampler and RNG state, as tensors plus JSON (never a pickle: reading a checkpoint must not run
code that someone planted in it).

Every file's sha256 is recorded in `meta.json` under `files` when the directory is written, and
checked when it is loaded or resumed, so a damaged or altered file (trainable weights included)
is named instead of trained on. A finished run folder holds its final model as a plain Hugging
Face directory too (hard links to the last checkpoint's files), so `from_pretrained(run_dir)`
works as it does for HF Trainer's `output_dir`; `resolve()` takes a run folder (its newest
checkpoint, or `step=N`) or a checkpoint folder, everywhere a checkpoint is asked for.

Old checkpoints still load: a `trainer_state.pt` from bvvlab 0.1 is read with
`torch.load(weights_only=True)` and only the numpy types its RNG states need allowed; a
checkpoint without `files` digests is checked by its frozen-matrix hash alone, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bvvlab.core.atomic import (
    apply_umask,
    atomic_dir,
    output_error,
    sha256_file,
    to_jsonable,
    write_json_atomic,
)
from bvvlab.core.errors import BVVError
from bvvlab.models.folder import (  # noqa: F401  (CheckpointError and the folder checks: re-exported)
    SAFE_WEIGHTS,
    CheckpointError,
    check_shape_fields,
    check_weight_files,
    read_config,
    read_tokenizer,
)

STATE_FILE = "trainer_state.safetensors"
LEGACY_STATE_FILE = "trainer_state.pt"  # bvvlab 0.1: a pickle, read with weights_only=True
CKPT_PREFIX = "step_"
EXPERT_SEP = "::"  # `FUSED_DIR::NAME` names one expert of a fused checkpoint on the command line
EMBED_KEY = "model.embed_tokens.weight"
# what the run folder's final model consists of (every file of a checkpoint but its trainer state and meta)
_NOT_MODEL = {STATE_FILE, LEGACY_STATE_FILE, "meta.json"}


# ---------------------------------------------------------------------------------------------
# plain HF directories


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """No transformers progress bars (loading / writing weights) while bvvlab saves or loads."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def file_digests(folder: str | os.PathLike, skip: tuple[str, ...] = ("meta.json",)) -> dict[str, str]:
    """sha256 of every file directly in `folder` (but `skip`), by name."""
    folder = Path(folder)
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in skip}


def write_model_files(model: Any, tokenizer: Any, out: Path) -> None:
    """The Hugging Face files of `model` (+ tokenizer) into an existing folder `out`."""
    from transformers import GenerationConfig

    if tokenizer is not None and len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}; save the tokenizer the matrix was built from")
    cfg = model.config
    if tokenizer is not None:
        for name in ("pad", "bos", "eos"):
            tid = getattr(tokenizer, f"{name}_token_id", None)
            if tid is not None and getattr(cfg, f"{name}_token_id") is None:
                setattr(cfg, f"{name}_token_id", tid)
    gen = model.generation_config if model.generation_config is not None else GenerationConfig()
    for name in ("bos", "eos", "pad"):
        if getattr(gen, f"{name}_token_id", None) is None:
            setattr(gen, f"{name}_token_id", getattr(cfg, f"{name}_token_id"))
    model.generation_config = gen
    with quiet_hf():
        model.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)


def _finish_dir(folder: Path, meta: dict[str, Any]) -> None:
    """meta.json with the digests of every other file; every file gets the user's umask
    (transformers writes model.safetensors 0600, which a teammate could not read)."""
    for p in folder.iterdir():
        if p.is_file():
            apply_umask(p)
    write_json_atomic(folder / "meta.json", {**meta, "files": file_digests(folder)})


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike, meta: dict | None = None,
                    overwrite: bool = False, state: dict[str, Any] | None = None) -> Path:
    """Write a self-describing Hugging Face checkpoint directory, atomically (a temporary
    sibling renamed into place). Refuses an existing non-empty directory unless `overwrite=True`.
    `state` (a trainer's state) is stored as `trainer_state.safetensors`."""
    from bvvlab.models.model import count_parameters

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"checkpoint directory {out} is not empty; choose a new directory or pass overwrite=True")
    needed = _tensor_bytes(model.state_dict()) + _tensor_bytes(state)  # what a full disk line reports
    with atomic_dir(out, replace=True, needed=needed) as tmp:
        write_model_files(model, tokenizer, tmp)
        if state is not None:
            save_state(state, tmp / STATE_FILE)
        _finish_dir(tmp, {**(meta or {}), "embedding_hash": model.config.embedding_hash,
                          "parameters": count_parameters(model)})
    return out


def _tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor / array in a nested state (the size of its safetensors file, about)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _safetensors_complete(path: Path) -> bool:
    """Whether a safetensors file's header parses and its size is exactly header + tensor data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                return False
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return 8 + n + max(ends, default=0) == size
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


def _safetensors_shape(path: Path, key: str) -> list[int] | None:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return header.get(key, {}).get("shape")


def _meta_file(path: Path) -> tuple[dict[str, Any], str | None]:
    """(meta.json's content, None) or ({}, what is wrong with it); ({}, None) when there is none."""
    p = path / "meta.json"
    if not p.exists():
        return {}, None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}, "not JSON"
    if not isinstance(meta, dict):
        return {}, "not a JSON object"
    files = meta.get("files")
    if files is not None and not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                  for k, v in files.items())):
        return {}, "its record of file digests is not a table of file names and sha256 digests"
    return meta, None


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's (or run's) meta.json; {} when there is none; one line when it is damaged."""
    meta, problem = _meta_file(Path(path))
    if problem:
        raise CheckpointError(f"{Path(path) / 'meta.json'} is damaged ({problem}): restore it, or use another "
                              "checkpoint")
    return meta


def damaged_files(path: str | os.PathLike) -> list[str]:
    """Files of a checkpoint whose bytes differ from the digests recorded when it was written
    (missing ones included); [] for an intact checkpoint. A checkpoint written before digests
    existed gets the check its files allow: every safetensors file must hold its whole header
    and exactly the bytes the header describes (a truncated or padded file is named). A damaged
    meta.json is named itself."""
    path = Path(path)
    meta, problem = _meta_file(path)
    if problem:
        return ["meta.json"]
    recorded = meta.get("files") or {}
    if not recorded:
        return [p.name for p in sorted(path.glob("*.safetensors")) if not _safetensors_complete(p)]
    return [name for name, digest in recorded.items()
            if not (path / name).is_file() or sha256_file(path / name) != digest]


def damage(path: str | os.PathLike) -> str | None:
    """Why a checkpoint's files cannot be trusted, in words (None when intact): a damaged
    meta.json, files that differ from the digests it records, or, in a checkpoint that records
    none, safetensors files whose size does not match their header. Only recorded digests are
    called digests (issue 26, item 22)."""
    path = Path(path)
    meta, problem = _meta_file(path)
    if problem:
        return f"meta.json is damaged ({problem})"
    bad = damaged_files(path)
    if not bad:
        return None
    if not meta.get("files"):
        return (f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} incomplete (the size does not match the "
                "safetensors header; this checkpoint records no digests to compare with)")
    return f"{', '.join(bad)} differ from the digests recorded when it was saved (damaged or altered)"


# ---------------------------------------------------------------------------------------------
# reading a bvvlab checkpoint


def _bvv_config(path: Path) -> Any:
    """The BVVConfig of a bvv checkpoint folder, every field checked first (one line naming it)."""
    from bvvlab.models.model import BVVConfig

    raw = read_config(path)
    if raw.get("model_type") != "bvv":
        raise CheckpointError(f"{path} holds a {raw.get('model_type')!r} model, not a bvvlab model (model_type "
                              "'bvv'): load it with bvvlab.models.loader.load, which reads any causal LM")
    check_shape_fields(raw, f"{path / 'config.json'}", optional=("intermediate_size",))
    try:
        return BVVConfig.from_pretrained(path)
    except (TypeError, ValueError, ZeroDivisionError, OSError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0].removeprefix("BVVConfig: ")
        raise CheckpointError(f"{path / 'config.json'}: {msg}") from None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    verify_hash: bool = True, step: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a bvvlab checkpoint, a run folder (its newest checkpoint, or `step`)
    or any directory written by `save_checkpoint`, checked for consistency: file digests, the
    config's fields, safetensors weights only, the matrix's rows against the config and the
    tokenizer, and its sha256 against the config. The reader under `bvvlab.models.loader.load`
    (which takes any model a user can name) and the trainer's resume."""
    from bvvlab.models.model import BVVForCausalLM, matrix_sha256

    path = resolve(path, step)
    if verify_hash:
        why = damage(path)
        if why:
            raise CheckpointError(f"{path}: {why}{_intact_hint(path)}")
    config = _bvv_config(path)
    check_weight_files(path)
    weights = path / SAFE_WEIGHTS
    if weights.exists():
        try:
            shape = _safetensors_shape(weights, EMBED_KEY)
        except (ValueError, OSError, UnicodeDecodeError, AttributeError):
            raise CheckpointError(f"{weights} is damaged (unreadable safetensors header){_intact_hint(path)}") from None
        if shape is not None and list(shape) != [config.vocab_size, config.hidden_size]:
            raise CheckpointError(f"{weights}: embedding matrix is {shape[0]}x{shape[1]} but config.json says "
                                  f"{config.vocab_size}x{config.hidden_size}; the checkpoint is inconsistent, re-save it")
    tokenizer = read_tokenizer(path)
    if tokenizer is not None and len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {len(tokenizer)} tokens but the embedding matrix has "
                              f"{config.vocab_size} rows; the tokenizer and matrix do not belong together")
    try:
        with quiet_hf():
            model = BVVForCausalLM.from_pretrained(path, config=config, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, BVVError):
            raise
        raise CheckpointError(f"{path}: the weights cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
                              f"{_intact_hint(path)}") from None
    emb = model.model.embed_tokens.weight
    if verify_hash and config.frozen_embedding and config.embedding_hash and emb.dtype == torch.float32:
        got = matrix_sha256(emb)
        if got != config.embedding_hash:
            raise CheckpointError(f"{path}: frozen matrix sha256 {got[:12]}... does not match config embedding_hash "
                                  f"{config.embedding_hash[:12]}...; the weights were altered, re-save the checkpoint")
    return model.to(device=device, dtype=dtype), tokenizer


# ---------------------------------------------------------------------------------------------
# trainer state: tensors in safetensors, everything else in JSON (no pickle)


def _pack(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64 if obj.dtype.kind in "ui" else obj.dtype))
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _pack(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _pack(v, tensors, f"{key}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _pack(to_jsonable(obj), tensors, key)


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _unpack(v, tensors) for k, v in obj["__items__"]}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


def save_state(state: dict[str, Any], path: Path) -> None:
    """A trainer state (nested dicts/lists/tuples of tensors, arrays and JSON values) as one
    safetensors file: the tensors, and the structure as JSON in its metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(state, tensors, "s")
    save_file(tensors, str(path), metadata={"bvvlab_state": json.dumps(tree)})


def _read_legacy_state(path: Path) -> dict[str, Any]:
    """bvvlab 0.1's pickled trainer_state.pt, without running anything it may hold: only
    tensors, containers and the numpy types of its RNG and sampler states are allowed (arrays,
    scalars and dtypes, under their numpy 1 and numpy 2 names)."""
    with torch.serialization.safe_globals(_legacy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _legacy_globals() -> list[Any]:
    try:
        from numpy._core import multiarray  # numpy 2 (numpy.core is a deprecated alias)
    except ImportError:  # numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype]
    allowed += [t for name in dir(np.dtypes) if isinstance(t := getattr(np.dtypes, name), type)
                and issubclass(t, np.dtype)]  # numpy 2 pickles a dtype as its class, e.g. numpy.dtypes.UInt32DType
    for fn in (multiarray._reconstruct, multiarray.scalar):
        allowed += [(fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    return allowed


def read_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The trainer state of a checkpoint directory; one CheckpointError line if it is missing or damaged."""
    ckpt = Path(ckpt)
    path = ckpt / STATE_FILE
    try:
        if path.exists():
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as fh:
                tree = json.loads((fh.metadata() or {})["bvvlab_state"])
            return _unpack(tree, load_file(str(path)))
        if (ckpt / LEGACY_STATE_FILE).exists():
            return _read_legacy_state(ckpt / LEGACY_STATE_FILE)
    except Exception as exc:  # noqa: BLE001 - truncated, overwritten, planted: the same user-facing fault
        raise CheckpointError(f"{path if path.exists() else ckpt / LEGACY_STATE_FILE} is damaged or not a bvvlab "
                              f"trainer state ({type(exc).__name__}){_intact_hint(ckpt)}") from None
    raise CheckpointError(f"{ckpt} has no trainer state ({STATE_FILE}): its weights load, but a run cannot resume "
                          "from it exactly")


def read_trainer_meta(ckpt: str | os.PathLike) -> dict[str, Any]:
    """What a resume needs before building anything: the saved step and config (from meta.json,
    falling back to the trainer state for checkpoints that did not record them there)."""
    meta = read_meta(ckpt)
    if "train_config" in meta:
        return {"step": meta.get("step"), "config": meta["train_config"]}
    state = read_trainer_state(ckpt)
    return {"step": state.get("step"), "config": state.get("config")}


# ---------------------------------------------------------------------------------------------
# run folders


RUN_MARKERS = ("meta.json", "metrics.jsonl", "checkpoints")  # what a run folder holds once training started


def holds_run(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a training run (started, finished or killed before its first
    checkpoint): the one rule `train` (refuse or resume) and `grow` (resume a stage) share."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).exists() for n in RUN_MARKERS)


def has_state(p: Path) -> bool:
    return (p / STATE_FILE).exists() or (p / LEGACY_STATE_FILE).exists()


def step_dirs(out: str | os.PathLike) -> list[Path]:
    """Every `checkpoints/step_N` directory of a run (with or without trainer state), oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
            and p.name[len(CKPT_PREFIX):].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Resumable checkpoints of a run (renamed into place, so complete by construction), oldest first."""
    return [p for p in step_dirs(out) if has_state(p)]


def last_checkpoint(out: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(out)
    return ckpts[-1] if ckpts else None


def checkpoint_step(path: str | os.PathLike) -> int | None:
    name = Path(path).name
    return int(name[len(CKPT_PREFIX):]) if name.startswith(CKPT_PREFIX) and name[len(CKPT_PREFIX):].isdigit() else None


def is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file() and any((p / n).exists() for n in ("model.safetensors",
                                                                            "model.safetensors.index.json"))


def split_expert(path: str | os.PathLike) -> tuple[str, str | None]:
    """`FUSED_DIR::NAME` -> (FUSED_DIR, NAME); a path that exists is never split."""
    s = str(path)
    if EXPERT_SEP in s and not Path(s).exists():
        base, expert = s.rsplit(EXPERT_SEP, 1)
        return base, expert or None
    return s, None


def resolve(path: str | os.PathLike, step: int | None = None) -> Path:
    """The checkpoint directory meant by `path`: a run folder gives its newest checkpoint (or
    `checkpoints/step_N` for `step=N`); a checkpoint or plain HF directory gives itself."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p} does not exist: pass a run folder (runs/NAME) or a checkpoint folder "
                              "(runs/NAME/checkpoints/step_N)")
    steps = step_dirs(p)
    if step is not None:
        want = p / "checkpoints" / f"{CKPT_PREFIX}{int(step):07d}"
        if want.is_dir():
            return want
        have = ", ".join(str(checkpoint_step(s)) for s in steps) or "none"
        raise CheckpointError(f"{p} has no checkpoint at step {step} (steps saved: {have})")
    if steps:
        models = [s for s in steps if is_model_dir(s)]
        if models:
            return models[-1]
    if is_model_dir(p):
        return p
    raise CheckpointError(f"{p} holds no checkpoint (no config.json + model.safetensors, no checkpoints/step_N): "
                          "pass a run folder written by `bvvlab train` or a checkpoint folder")


def _intact_hint(ckpt: Path) -> str:
    """'; the newest intact checkpoint is ...' when `ckpt` is a step of a run that has another."""
    if checkpoint_step(ckpt) is None:
        return "; restore the file or re-save the checkpoint"
    run = ckpt.parent.parent
    for other in reversed(list_checkpoints(run)):
        if other != ckpt and not damaged_files(other):
            return f"; the newest intact checkpoint is {other}"
    return "; no intact checkpoint of this run is left"


def newest_intact(out: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint of a run whose files match their digests and whose trainer state
    reads, and the (checkpoint, reason) of every newer one that failed."""
    skipped: list[tuple[Path, str]] = []
    for ckpt in reversed(list_checkpoints(out)):
        bad = damaged_files(ckpt)
        if not bad:
            try:
                read_trainer_state(ckpt)
            except CheckpointError:
                bad = [STATE_FILE if (ckpt / STATE_FILE).exists() else LEGACY_STATE_FILE]
        if not bad:
            return ckpt, skipped
        skipped.append((ckpt, ", ".join(bad)))
    return None, skipped


def clean_leftovers(out: str | os.PathLike) -> list[str]:
    """Remove what a save killed mid-way left in `out/checkpoints`: `.tmp-step_N-<pid>` (a checkpoint
    being written: incomplete) and `.old-step_N-<pid>` (the previous copy of a re-saved step). An
    `.old-` copy whose step has no checkpoint any more (killed between the two renames) is complete,
    so it is renamed back instead. Returns the names removed. Without this they stay forever."""
    removed = []
    for root in (Path(out) / "checkpoints", Path(out)):
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir()):
            if p.name.startswith(".old-"):
                name = p.name[len(".old-"):].rsplit("-", 1)[0]
                if name.startswith(CKPT_PREFIX) and not (root / name).exists() and has_state(p):
                    os.replace(p, root / name)
                    continue
            if p.name.startswith((".tmp-", ".old-")) or (p.name.startswith(".") and p.name.endswith(".tmp")):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p.name)
    return removed


def save_trainer_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any],
                            meta: dict[str, Any], keep_last: int, expected_hash: str | None = None) -> Path:
    """`out/checkpoints/step_N`: the HF checkpoint + trainer state, written atomically; then only
    the newest `keep_last` resumable checkpoints are kept (a step folder without trainer state,
    i.e. one a user pruned by hand to keep its weights, is never deleted here). With
    `expected_hash`, the frozen matrix must still have it (nothing may write to it)."""
    if expected_hash is not None:
        from bvvlab.models.model import matrix_sha256

        got = matrix_sha256(model.get_input_embeddings().weight.detach())
        if got != expected_hash:
            raise RuntimeError(f"frozen glyph matrix changed at step {step} (hash {got[:12]} != {expected_hash[:12]}): "
                               "nothing may write to the frozen embedding; checkpoint not saved")
    final = Path(out) / "checkpoints" / f"{CKPT_PREFIX}{step:07d}"
    save_checkpoint(model, tokenizer, final, {**meta, "train_config": state.get("config")}, overwrite=True,
                    state=state)
    for stale in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def publish_final(out: Path, ckpt: Path) -> None:
    """Make the run folder a plain HF directory of its final model: every model file of `ckpt`
    hard-linked (copied where links are not possible) into `out`, each through a temporary name."""
    for src in sorted(ckpt.iterdir()):
        if not src.is_file() or src.name in _NOT_MODEL:
            continue
        tmp = out / f".{src.name}.link.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, out / src.name)
        except OSError as exc:  # a full disk or read-only folder: one line, no .link.tmp left behind
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise output_error(exc, out / src.name, src.stat().st_size) from None


def trained_holdout(path: str | os.PathLike) -> list[str] | None:
    """The concepts a bvvlab checkpoint's training never showed: the `holdout=` of its recorded
    corpus, intersected over the runs it was initialised from (`init_from`: growth stages,
    `--from`); None when it, or a run it came from, records no training config (a Hugging Face
    directory, a fused checkpoint)."""
    from bvvlab.corpus.sources import heldout_concepts

    held: set[str] | None = None
    where: str | os.PathLike | None = split_expert(path)[0]
    for _ in range(64):  # a model grown or initialised from a parent saw the parent's data too
        try:
            config = read_trainer_meta(resolve(where)).get("config") or {}
        except Exception:  # noqa: BLE001 - no bvvlab run: nothing recorded
            return None
        if "corpus" not in config:
            return None
        mine = set(heldout_concepts(config["corpus"], strict=False))
        held = mine if held is None else held & mine
        where = config.get("init_from")
        if not where:
            return sorted(held)
    return None
