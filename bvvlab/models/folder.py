"""What a model folder holds, read before any of its weights or code (floor 4; issue 26, items 1, 2, 9).

Every loader of bvvlab reads a folder through these first: its config.json as JSON (one line
naming the file when it is missing, truncated or not an object), the config's shape fields
(each a positive whole number: one line naming the field, not a TypeError from deep inside
transformers), its weight files (safetensors only: a pickle, or an index that points at one, is
refused before anything opens it) and, for bvvlab's own checkpoints, the tokenizer from
`tokenizer.json` alone, whatever class or `auto_map` its tokenizer_config.json names (no code
from the folder runs, and transformers never prompts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bvvlab.core.errors import BVVError


class CheckpointError(BVVError):
    """A checkpoint that cannot be used (missing, damaged, inconsistent): one line with the fix."""


SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
# every shape a causal-LM config.json gives as a count: each must be a positive whole number
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                "intermediate_size", "num_key_value_heads")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def read_json_file(f: Path, what: str = "file") -> dict[str, Any]:
    """A JSON object from `f`; one line naming the file when it is missing, unreadable, truncated
    or not an object (transformers would raise OSError or TypeError from deep inside)."""
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{f.parent} has no {f.name}: it is not a model folder (pass a run folder, a "
                              "checkpoint folder or a Hugging Face model directory)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{f} cannot be read ({type(exc).__name__}): restore the {what}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{f} is damaged (not JSON: {exc.msg}, line {exc.lineno}; truncated?): restore the "
                              f"{what} from an intact copy") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{f} is damaged (not a JSON object): restore the {what} from an intact copy")
    return data


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A model folder's config.json as a dict (one line when it is missing or damaged)."""
    return read_json_file(Path(folder) / "config.json", "model config")


def check_shape_fields(config: dict[str, Any], where: str, optional: tuple[str, ...] = ()) -> None:
    """Every shape field of `config` that is present must be a positive whole number (`optional`
    ones may be null): one line naming `where` and the field, instead of a TypeError or a
    ZeroDivisionError while the model is built (or a model that loads and fails later)."""
    for key in SHAPE_FIELDS:
        if key not in config or (config[key] is None and key in optional):
            continue
        v = config[key]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise CheckpointError(f"{where}: {key} is {json.dumps(v)}, not a positive whole number: correct it, or "
                                  "restore the file from an intact copy of the checkpoint")


def check_weight_files(folder: str | os.PathLike) -> None:
    """Weights only from safetensors files: a `model.safetensors.index.json` whose shards are not
    `.safetensors` files in this folder, or a folder whose only weights are a pickle
    (`pytorch_model.bin`, `.pt`, ...), is one line before anything is opened (unpickling runs
    whatever the file names; issue 26, item 2)."""
    folder = Path(folder)
    index = folder / SAFE_INDEX
    if index.is_file():
        wmap = read_json_file(index, "weight index").get("weight_map")
        if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
            raise CheckpointError(f"{index} is damaged (no weight_map of tensor names to shard files): restore it")
        for shard in sorted(set(wmap.values())):
            if not shard.endswith(".safetensors") or Path(shard).name != shard:
                raise CheckpointError(f"{index} points at {shard!r}, which is not a .safetensors file in this folder: "
                                      "bvvlab reads weights only from safetensors (a pickle can run code); convert "
                                      "the checkpoint with save_pretrained(dir, safe_serialization=True) in a "
                                      "process you trust")
            if not (folder / shard).is_file():
                raise CheckpointError(f"{index} names the shard {shard}, which is not in {folder}: copy it there")
        return
    if (folder / SAFE_WEIGHTS).is_file():
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and
                     (p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle") or p.name.endswith(".bin.index.json")))
    if pickles:
        raise CheckpointError(f"{folder} holds its weights as {pickles[0]}, not safetensors: bvvlab never loads "
                              "pickled weights (they can run code); convert them with save_pretrained(dir, "
                              "safe_serialization=True) in a process you trust")
    raise CheckpointError(f"{folder} has no weights ({SAFE_WEIGHTS}): pass a complete checkpoint folder")


def read_tokenizer(folder: str | os.PathLike) -> Any | None:
    """The tokenizer of a bvvlab checkpoint, read from `tokenizer.json` as a
    `PreTrainedTokenizerFast`: whatever `tokenizer_class` or `auto_map` its tokenizer_config.json
    names is ignored, so no code from the folder runs and transformers never prompts (issue 26,
    item 1). None when the folder has no tokenizer files; one line when they cannot be read."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        if any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise CheckpointError(f"{folder} has tokenizer files but no tokenizer.json, which every bvvlab checkpoint "
                                  "saves: restore it, or save the tokenizer again (tokenizer.save_pretrained)")
        return None
    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged tokenizer file, whatever the parser says
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{folder}: the tokenizer cannot be read ({type(exc).__name__}: {first}): restore "
                              "tokenizer.json and tokenizer_config.json from an intact copy") from None
    tok.init_kwargs.pop("auto_map", None)  # never carried on into a checkpoint saved from this one
    return tok
