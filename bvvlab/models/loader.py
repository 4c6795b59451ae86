"""One loader for every model a user can name (floor 4; issue 22, issue 26 items 1, 2, 9, 12).

`load(spec)` takes what a user types: a run folder (its newest checkpoint, or `step=N`), a step
folder `RUN/checkpoints/step_N`, a fused checkpoint (`bvvlab fuse`), one expert of one
(`FUSED::EXPERT`), or any Hugging Face causal-LM directory. It returns a `Loaded`: the model (in
eval mode, on the device), its tokenizer, a label for tables, the folder the weights came from,
and what kind of model it is. `load_many(specs)` loads several, labelled by the one naming rule
of every table (`labels`). `bvvlab eval`, `probe`, `fuse`, `grow`, the widgets and the notebooks
all load through here.

Nothing in a folder runs (issue 26, item 1): bvvlab's own checkpoints (model_type `bvv` and
`bvv_fused`) load through bvvlab's classes, and their tokenizer from `tokenizer.json` as a
`PreTrainedTokenizerFast`, whatever `auto_map` their JSON files carry; a foreign folder whose
config.json or tokenizer_config.json asks for its own code (`auto_map`) is refused in one line
unless the caller passes `trust_remote_code=True` (`--trust-remote-code`), and transformers is
never left to ask on a terminal. Weights come from safetensors files only (item 2), and the
config's shape fields are checked before a model is built (item 9): `bvvlab.models.folder`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from bvvlab.core.device import resolve_device
from bvvlab.models import checkpoints as C
from bvvlab.models.folder import (
    TOKENIZER_FILES,
    CheckpointError,
    check_shape_fields,
    check_weight_files,
    read_config,
    read_json_file,
    read_tokenizer,
)

BVV_TYPE, FUSED_TYPE = "bvv", "bvv_fused"
KINDS = {BVV_TYPE: "bvv", FUSED_TYPE: "fused"}  # model_type -> kind; any other type is "hf"
FOREIGN_OPTIONAL = ("intermediate_size", "num_key_value_heads", "max_position_embeddings")  # null: the class's default


@dataclass
class Loaded:
    """A model as loaded for a command: `model` in eval mode, its `tokenizer`, a `label` for tables,
    the checkpoint folder `path` its weights came from, the `spec` the caller named, its `kind`
    ("bvv", "fused" or "hf") and, for `FUSED::EXPERT`, the `expert` named (`model` is then the
    whole fused model, loaded once; `causal_lm()` is that expert alone)."""

    model: Any
    tokenizer: Any
    label: str
    path: Path
    spec: str
    kind: str
    expert: str | None = None

    @property
    def experts(self) -> list[str]:
        """A fused model's expert names, in order ([] for any other model)."""
        return list(self.model.config.expert_names) if self.kind == "fused" else []

    def causal_lm(self) -> Any:
        """The model to score or generate with: the named expert on its own for `FUSED::EXPERT`."""
        return self.model if self.expert is None else expert_model(self.model, self.expert)


def load(spec: str | os.PathLike, device: Any = "cpu", dtype: torch.dtype | None = None, *, step: int | None = None,
         label: str | None = None, trust_remote_code: bool = False, verify: bool = True) -> Loaded:
    """The model `spec` names (see the module docstring), checked and on `device` (`dtype`: cast
    after the checks). `verify=False` skips the digest and frozen-matrix checks of bvvlab
    checkpoints. Every problem is one `CheckpointError` line naming the file and the fix."""
    dev = resolve_device(device)
    base, expert = C.split_expert(spec)
    path = _resolve(base, step)
    config = read_config(path)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise CheckpointError(f"{path / 'config.json'} names no model_type: restore the file from an intact copy "
                              "(a bvvlab checkpoint says \"model_type\": \"bvv\")")
    kind = KINDS.get(config["model_type"], "hf")
    if expert is not None and kind != "fused":
        raise CheckpointError(f"{base} is not a fused checkpoint, so it has no expert {expert!r}: drop "
                              f"{C.EXPERT_SEP}{expert}")
    if kind == "bvv":
        model, tok = C.load_checkpoint(path, dev, dtype, verify_hash=verify)
    elif kind == "fused":
        model, tok = load_fused(path, dev, dtype, verify)
        names = list(model.config.expert_names)
        if expert is not None and expert not in names:
            raise CheckpointError(f"{base} has no expert {expert!r}: its experts are {', '.join(names)} (name one as "
                                  f"{base}{C.EXPERT_SEP}{names[0]})")
    else:
        model, tok = _load_foreign(path, config, dev, dtype, trust_remote_code)
    if tok is None:
        raise CheckpointError(f"{path} has no tokenizer files: save the tokenizer beside the model "
                              "(tokenizer.save_pretrained)")
    return Loaded(model.eval(), tok, label or labels([spec])[0], path, str(spec), kind, expert)


def load_many(specs: Sequence[str | os.PathLike], device: Any = "cpu", dtype: torch.dtype | None = None, *,
              trust_remote_code: bool = False, verify: bool = True) -> list[Loaded]:
    """`load` for every spec, labelled by `labels` (so a table's rows can always be told apart)."""
    return [load(s, device, dtype, label=name, trust_remote_code=trust_remote_code, verify=verify)
            for s, name in zip(specs, labels(specs))]


def _resolve(base: str, step: int | None) -> Path:
    """The checkpoint folder of `base`; a model folder that `resolve` does not take because its
    weights are a pickle is named as such (`check_weight_files`), not as "no checkpoint"."""
    try:
        return C.resolve(base, step)
    except CheckpointError:
        p = Path(base).expanduser()
        if p.is_dir() and (p / "config.json").is_file():
            check_weight_files(p)
        raise


# ---------------------------------------------------------------------------------------------
# the naming rule of every table


def _parts(spec: str | os.PathLike) -> tuple[list[str], str | None, str]:
    """(the path's parts, innermost last, with `checkpoints` dropped before a step folder; the
    expert; the identity of the model: its resolved folder and expert)."""
    base, expert = C.split_expert(spec)
    p = Path(base).expanduser().resolve()
    parts = [x for x in p.parts if x != p.anchor] or [str(p)]
    if C.checkpoint_step(p) is not None and len(parts) > 2 and parts[-2] == "checkpoints":
        parts = parts[:-2] + parts[-1:]
    return parts, expert, f"{p}{C.EXPERT_SEP}{expert or ''}"


def labels(specs: Sequence[str | os.PathLike]) -> list[str]:
    """One short label per model, for every table and figure of bvvlab: the folder's name
    (`RUN/step_N` for a step folder, `FUSED/EXPERT` for one expert); where two different models
    would share a label, their parent folders are added until they differ; the same model named
    again is `LABEL#2`, `#3`, ... Labels are distinct, so rows can always be told apart."""
    info = [_parts(s) for s in specs]
    depth = [2 if C.checkpoint_step(C.split_expert(s)[0]) is not None else 1 for s in specs]

    def name(i: int) -> str:
        parts, expert, _ = info[i]
        text = "/".join(parts[-depth[i]:])
        return f"{text}/{expert}" if expert else text

    while True:
        names = [name(i) for i in range(len(specs))]
        owners: dict[str, set[str]] = {}
        for n, (_, _, ident) in zip(names, info):
            owners.setdefault(n, set()).add(ident)
        clash = [i for i, n in enumerate(names) if len(owners[n]) > 1 and depth[i] < len(info[i][0])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


# ---------------------------------------------------------------------------------------------
# fused checkpoints


def is_fused_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a fused checkpoint (config.json's model_type is bvv_fused)."""
    try:
        return read_config(path).get("model_type") == FUSED_TYPE
    except CheckpointError:
        return False


def _check_fused_config(config: dict[str, Any], where: str) -> None:
    experts = config.get("expert_configs")
    if not isinstance(experts, list) or len(experts) < 2 or not all(isinstance(e, dict) for e in experts):
        raise CheckpointError(f"{where}: expert_configs is not a list of two or more expert configs: restore the "
                              "file, or re-run `bvvlab fuse`")
    for i, e in enumerate(experts):
        check_shape_fields(e, f"{where} expert_configs[{i}]", optional=("intermediate_size",))
    names = config.get("expert_names")
    if names is not None and (not isinstance(names, list) or len(names) != len(experts)
                              or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise CheckpointError(f"{where}: expert_names is not one distinct name per expert: restore the file, or "
                              "re-run `bvvlab fuse`")


def load_fused(path: str | os.PathLike, device: Any = "cpu", dtype: torch.dtype | None = None,
               verify: bool = True) -> tuple[Any, Any]:
    """(fused model, tokenizer) from a folder written by `bvvlab fuse`: digests, config fields,
    safetensors weights and the shared matrix's hash checked, through bvvlab's own classes."""
    from bvvlab.models.fused_model import FusedConfig, FusedForCausalLM
    from bvvlab.models.model import matrix_sha256

    path = Path(path)
    config = read_config(path)
    if config.get("model_type") != FUSED_TYPE:
        raise CheckpointError(f"{path} is not a fused checkpoint (config.json model_type is not {FUSED_TYPE!r}); "
                              "write one with `bvvlab fuse`")
    why = C.damage(path) if verify else None
    if why:
        raise CheckpointError(f"{path}: {why}; restore it or re-run `bvvlab fuse`")
    _check_fused_config(config, str(path / "config.json"))
    check_weight_files(path)
    try:
        cfg = FusedConfig.from_pretrained(path)
    except (TypeError, ValueError, ZeroDivisionError, KeyError, OSError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: {_first_line(exc)}") from None
    try:
        with C.quiet_hf():
            model = FusedForCausalLM.from_pretrained(path, config=cfg, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights cannot be read ({_first_line(exc)}); re-run `bvvlab fuse`") from None
    got = matrix_sha256(model.embed_tokens.weight)
    if verify and model.config.embedding_hash and got != model.config.embedding_hash:
        raise CheckpointError(f"{path}: shared matrix sha256 {got[:12]}... does not match config embedding_hash; "
                              "re-run `bvvlab fuse`")
    tok = read_tokenizer(path)
    if tok is not None and len(tok) != model.config.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {len(tok)} tokens but the shared matrix has "
                              f"{model.config.vocab_size} rows; the tokenizer and matrix do not belong together")
    return model.to(device=device, dtype=dtype).eval(), tok


def expert_model(fused: Any, name: str) -> Any:
    """One expert of a loaded fused model as a `BVVForCausalLM` of its own: its blocks and head,
    and the shared frozen matrix; the same logits as the expert's original checkpoint."""
    from bvvlab.models.model import BVVForCausalLM

    names = list(fused.config.expert_names)
    if name not in names:
        raise CheckpointError(f"the fused model has no expert {name!r}: its experts are {', '.join(names)}")
    i = names.index(name)
    weight = fused.embed_tokens.weight
    config = fused.config.expert_config(i)
    config._attn_implementation = fused.experts[i].config._attn_implementation
    lm = BVVForCausalLM(config)
    state = {**fused.experts[i].state_dict(), C.EMBED_KEY: weight}
    lm.load_state_dict(state, strict=True)
    return lm.to(device=weight.device, dtype=weight.dtype).eval()


# ---------------------------------------------------------------------------------------------
# any other Hugging Face causal LM


def remote_code(path: Path, config: dict[str, Any]) -> str | None:
    """What in a folder asks to run code shipped with it (the `auto_map` of config.json or
    tokenizer_config.json), in words; None when nothing does."""
    found = []
    tok_file = path / "tokenizer_config.json"
    tok_cfg = read_json_file(tok_file, "tokenizer config") if tok_file.is_file() else {}
    for name, data in (("config.json", config), ("tokenizer_config.json", tok_cfg)):
        amap = data.get("auto_map")
        if amap:
            refs = [r for v in (amap.values() if isinstance(amap, dict) else [amap])
                    for r in (v if isinstance(v, (list, tuple)) else [v]) if r]
            found.append(f"{name} (auto_map: {', '.join(map(str, refs)) or amap})")
    return " and ".join(found) or None


def _load_foreign(path: Path, config: dict[str, Any], device: Any, dtype: torch.dtype | None,
                  trust_remote_code: bool) -> tuple[Any, Any]:
    """A Hugging Face causal LM that is not bvvlab's: through the Auto classes, safetensors only,
    with `trust_remote_code` passed explicitly (never None: None lets transformers prompt)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    code = remote_code(path, config)
    if code and not trust_remote_code:
        raise CheckpointError(f"{path}: {code} asks to run Python code from the folder, which bvvlab never does "
                              "unless told to: read that code, then pass --trust-remote-code (trust_remote_code=True)")
    check_shape_fields(config, str(path / "config.json"), optional=FOREIGN_OPTIONAL)
    check_weight_files(path)
    model_type = config.get("model_type")
    if not code and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        if model_type in CONFIG_MAPPING_NAMES:
            raise CheckpointError(f"{path}: a {model_type!r} model is not a causal LM (AutoModelForCausalLM cannot load "
                                  "it): pass a causal LM checkpoint")
        raise CheckpointError(f"{path / 'config.json'}: model_type {model_type!r} is not one this transformers knows: "
                              "pass a bvvlab checkpoint or a Hugging Face causal LM directory")
    try:
        with C.quiet_hf(), _errors_only():
            cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
            model, info = AutoModelForCausalLM.from_pretrained(
                path, config=cfg, trust_remote_code=trust_remote_code, use_safetensors=True, local_files_only=True,
                output_loading_info=True, ignore_mismatched_sizes=True)  # mismatches checked below, in one line
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises for a bad folder: one line
        raise CheckpointError(f"{path}: transformers cannot load it as a {model_type!r} causal LM "
                              f"({_first_line(exc)})") from None
    missing = sorted(info.get("missing_keys") or [])
    shapes = sorted(info.get("mismatched_keys") or [], key=str)
    if missing or shapes:  # transformers would fill them with random numbers and carry on
        if shapes:
            key, have, want = (list(shapes[0]) + [None, None])[:3]
            what = (f"{len(shapes)} tensors of another shape, e.g. {key}: {'x'.join(map(str, have or []))} in the "
                    f"weights, {'x'.join(map(str, want or []))} in the config")
        else:
            what = f"{len(missing)} tensors missing, e.g. {missing[0]}"
        raise CheckpointError(f"{path}: its weights do not fit the {model_type!r} model its config.json describes "
                              f"({what}): the config and the weights do not belong together")
    tok = None
    if any((path / f).is_file() for f in TOKENIZER_FILES):
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: its tokenizer cannot be read ({_first_line(exc)})") from None
    return model.to(device=device, dtype=dtype), tok


@contextlib.contextmanager
def _errors_only() -> Iterator[None]:
    """transformers' own loading report (a table of missing and unexpected weights) not printed:
    the loader checks the weights itself and says what is wrong in one line."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
