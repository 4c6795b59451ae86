"""What a training run trains: the vocabulary + glyph matrix and the model for a config.

`prepare_embedded` gives the tokenizer and frozen glyph matrix of `cfg.vocab` (docs/recipe.md
sections 2-3; a compact vocabulary is cached by content), `build_model` a fresh model of
`cfg.preset` over it, seeded so that the frozen and the unfrozen twin share every tensor but the
embedding. `load_for_resume` reopens a run's checkpoint and refuses one whose model config differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bvvlab.core.atomic import atomic_dir, hash_path
from bvvlab.core.runinfo import cache_dir
from bvvlab.models.checkpoints import EMBED_KEY, load_checkpoint, read_meta
from bvvlab.train.config import TrainConfig


def _compact_cache_key(dim: int, texts: list[str]) -> str:
    """Everything a compact vocabulary is made of: the code that builds it, the font, the embedded
    corpora the base n-grams come from, the width and the training texts."""
    from bvvlab.corpus import sources as corpora
    from bvvlab.glyph import bitmaps as glyphs
    from bvvlab.glyph import embeddings, font
    from bvvlab.glyph import tokenizer as tk

    h = hashlib.sha256()
    for module in (tk, embeddings, glyphs, font, corpora):
        hash_path(Path(module.__file__), h)
    h.update(font.font_sha256().encode())
    for name in tk.DEFAULT_CORPORA:
        h.update(corpora.source_fingerprint(name).encode())
    h.update(f"compact:{dim}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:24]


def prepare_embedded(cfg: TrainConfig, texts: list[str] | None) -> Any:
    """The tokenizer + glyph matrix (recipe sections 2-3) for `cfg.vocab`.

    A compact vocabulary is cached under `cache_dir()/vocab/<key>` (a saved `Embedded`, keyed by
    content), so runs on the same text (twins, resumed or repeated runs) skip rebuilding it.
    """
    from bvvlab.glyph import embeddings as E

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
    with contextlib.suppress(FileExistsError):  # another process may have finished the same entry first
        with atomic_dir(final) as tmp:
            embedded.save(tmp, overwrite=True)
    return embedded


def vocab_texts(cfg: TrainConfig, weights: dict[str, float]) -> list[str] | None:
    """The training texts a compact vocabulary is built from (docs/recipe.md section 2); None for
    any other vocab (it does not depend on the text)."""
    from bvvlab.train import shards as D

    if cfg.vocab != "compact":
        return None
    budget = D.resolve_max_chars(weights, "train", cfg.train_chars, cfg.seed)
    texts = list(D.take_chars(D.iter_texts(weights, "train", cfg.seed), budget))
    if not texts:
        raise ValueError(f"corpus {', '.join(weights)} has no text in split 'train': point corpus= at a "
                         "source with text")
    return texts


def model_dim(cfg: TrainConfig) -> int:
    """The glyph matrix's width: `dim`, else the model's hidden_size (the embedding feeds the blocks)."""
    from bvvlab.models import model as M

    if cfg.dim is not None:
        return int(cfg.dim)
    if "hidden_size" in cfg.model:
        return int(cfg.model["hidden_size"])
    if cfg.preset not in M.PRESETS:
        raise ValueError(f"unknown model preset {cfg.preset!r}; choose one of {', '.join(M.PRESETS)}")
    return int(M.PRESETS[cfg.preset]["hidden_size"])


def build_model_config(cfg: TrainConfig, embedded: Any) -> Any:
    """The preset's config with the trainer's overrides: vocab and width from the matrix, `frozen`."""
    from bvvlab.models import model as M

    overrides = dict(cfg.model)
    overrides["vocab_size"] = int(embedded.matrix.shape[0])
    overrides["hidden_size"] = int(embedded.matrix.shape[1])
    overrides["frozen_embedding"] = cfg.frozen
    for name in ("pad", "bos", "eos"):  # recorded in meta.json as config.json will hold them
        tid = getattr(embedded.tokenizer, f"{name}_token_id", None)
        if tid is not None:
            overrides[f"{name}_token_id"] = int(tid)
    return M.config_from_preset(cfg.preset, **overrides)




def build_model(cfg: TrainConfig, embedded: Any) -> torch.nn.Module:
    """A fresh model of `cfg.preset` (+ overrides) over the embedded vocabulary, initialised from
    `cfg.seed` alone.

    The frozen and the unfrozen twin start from the same transformer: a trainable nn.Embedding
    draws its init from the RNG before the blocks do, so building the unfrozen model directly would
    give every Linear and the head other weights, and the comparison would mix the embedding's
    effect with an init lottery. So the unfrozen twin takes every tensor but the embedding from the
    frozen-architecture model of the same seed; its embedding keeps its own seeded init.
    """
    from bvvlab.models import model as M

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


def init_from_checkpoint(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Load `cfg.init_from`'s weights into `model` (a model as deep or deeper, same width and
    matrix): every tensor the checkpoint has is copied; a block it lacks keeps its seeded random
    init, or with `new_block_init="copy"` takes the weights of the block below it (growth,
    docs/recipe.md section 6). Returns what was done, for meta.json."""
    from safetensors.torch import load_file

    from bvvlab.models import checkpoints as C
    from bvvlab.models.model import matrix_sha256

    parent = C.resolve(cfg.init_from)
    why = C.damage(parent)
    if why:
        raise C.CheckpointError(f"init_from={parent}: {why}")
    kind = C.read_config(parent).get("model_type")
    if kind != "bvv":
        what = "a fused checkpoint" if kind == "bvv_fused" else f"a {kind!r} model"
        raise C.CheckpointError(f"init_from={parent} is {what}, not one bvvlab trained: start from a run folder or "
                                "checkpoint written by bvvlab train or grow")
    C.check_weight_files(parent)
    if not (parent / C.SAFE_WEIGHTS).is_file():
        raise C.CheckpointError(f"init_from={parent} keeps its weights in shards: start from a checkpoint written by "
                                "bvvlab train or grow (one model.safetensors)")

    src = load_file(str(parent / "model.safetensors"))
    mine = model.state_dict()
    if EMBED_KEY in src and matrix_sha256(src[EMBED_KEY]) != matrix_sha256(mine[EMBED_KEY]):
        raise ValueError(f"init_from={parent} was trained on another glyph matrix (matrix_hash differs): grow from a "
                         "checkpoint built with the same vocab=")
    bad = [k for k, v in src.items() if k not in mine or mine[k].shape != v.shape]
    if bad:
        raise ValueError(f"init_from={parent} does not fit this model ({bad[0]}: "
                         f"{tuple(src[bad[0]].shape)} vs {tuple(mine[bad[0]].shape) if bad[0] in mine else 'absent'}): "
                         "use the same preset and width, and at least as many layers")
    parent_layers = 1 + max((int(k.split(".")[2]) for k in src if k.startswith("model.blocks.")), default=-1)
    new = list(range(parent_layers, model.config.num_hidden_layers))
    if cfg.new_block_init == "copy" and parent_layers > 0:
        for i in new:
            prefix, below = f"model.blocks.{i}.", f"model.blocks.{parent_layers - 1}."
            for k in mine:
                if k.startswith(prefix):
                    src[k] = src[below + k[len(prefix):]].clone()
    model.load_state_dict({**mine, **src})
    return {"from": str(parent), "parent_layers": parent_layers, "new_blocks": new, "new_block_init": cfg.new_block_init}


def freeze(model: torch.nn.Module, n_blocks: int) -> list[int]:
    """Stop training the first `n_blocks` blocks (requires_grad False); the rest and the head train."""
    layers = model.config.num_hidden_layers
    if n_blocks > layers:
        raise ValueError(f"freeze_blocks={n_blocks} but the model has {layers} blocks: use freeze_blocks<={layers}")
    for i in range(n_blocks):
        for p in model.model.blocks[i].parameters():
            p.requires_grad_(False)
    return list(range(n_blocks))


def add_lora(model: torch.nn.Module, blocks: list[int], rank: int, alpha: float | None, seed: int) -> dict[str, Any]:
    """A trainable rank-`rank` LoRA update (bvvlab.models.lora) on every linear layer of the frozen
    `blocks` (attention qkv_proj (q, k, v fused) and o_proj, MLP up_proj and down_proj), their
    base weights left frozen: growth's "low-rank update of the earlier layers" (docs/recipe.md
    section 6). The A matrices come from a generator seeded by `seed` (the global RNG is not
    drawn from), B starts at zero, so the model's outputs are unchanged at the start. Returns
    what was done, for meta.json; {} for rank 0."""
    from bvvlab.models import lora

    if not rank:
        return {}
    alpha = float(rank if alpha is None else alpha)
    gen = torch.Generator().manual_seed(seed)
    names = [f"model.blocks.{i}.{n}" for i in blocks for n in lora.apply(model.model.blocks[i], rank, alpha, gen)]
    params = sum(p.numel() for m in lora.adapted(model).values() for p in (m.lora_A, m.lora_B))
    return {"rank": rank, "alpha": alpha, "scale": alpha / rank, "blocks": list(blocks), "modules": names,
            "params": params}


def embedding_hash(model: torch.nn.Module) -> str:
    """sha256 of the input matrix, as the model records it in `config.embedding_hash`."""
    from bvvlab.models.model import matrix_sha256

    return matrix_sha256(model.get_input_embeddings().weight.detach())


@dataclass
class _EmbeddedView:
    """What the trainer needs of an `Embedded` when it resumes from a checkpoint."""

    tokenizer: Any
    matrix: torch.Tensor
    matrix_hash: str | None  # the glyph matrix's hash (= config.embedding_hash of a frozen model), as recorded
    meta: dict[str, Any] | None = None  # the Embedded's provenance (recipe params, font, hash), as recorded


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


def load_for_resume(cfg: TrainConfig, out: Path, checkpoint: Path) -> tuple[torch.nn.Module, Any, _EmbeddedView]:
    """The model (in train mode) and tokenizer of the checkpoint a run resumes from, with the glyph
    matrix's identity as the run recorded it in `out`'s meta.json. Refuses, in one line, a
    checkpoint whose model config differs from the one `cfg` builds: a resume continues the same model."""
    model, tokenizer = load_checkpoint(checkpoint)
    prev = read_meta(out)
    embedded = _EmbeddedView(tokenizer, model.get_input_embeddings().weight.detach(),
                             prev.get("matrix_hash") or prev.get("frozen_hash"),  # bvvlab 0.1: frozen_hash
                             prev.get("embedding"))
    diff = _config_diff(build_model_config(cfg, embedded).to_dict(), model.config.to_dict())
    if diff:
        raise ValueError(f"{out} was trained with a different model config ({', '.join(diff)} differ): "
                         "use the same preset/model/vocab/frozen settings, or a new out=")
    model.train()
    return model, tokenizer, embedded

