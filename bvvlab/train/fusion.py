"""Fusion of experts that share the frozen glyph matrix (docs/recipe.md section 5).

`fuse(experts, method, out)` loads N >= 2 expert checkpoints, checks that they belong together
(one vocabulary, one tokenizer, one frozen matrix: same `embedding_hash`), and builds a
`bvvlab.models.fused_model.FusedForCausalLM` that stores the shared matrix once; with `out` it is saved
as one Hugging Face checkpoint directory whose remote code (`fused_model.py` + the expert
`model.py`) loads in a process that never imports bvvlab. Nothing is retrained or aligned
(the published fusion: "no router, no gate").

Experts, and the fused directory afterwards, load through the one loader
(`bvvlab.models.loader.load`: digests checked, bvvlab's own classes); `bpc_by_text(model,
tokenizer, texts)` measures bits per character of any causal LM over a list of texts (the
notebook's per-language tables).
`bvvlab fuse EXPERT EXPERT ... --method M --out DIR` (bvvlab.cli.fuse) is the command; `FuseConfig` its values.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bvvlab.core.errors import BVVError
from bvvlab.core.outputs import check_output
from bvvlab.models.checkpoints import (
    EXPERT_SEP,
    CheckpointError,
    save_checkpoint,
)
from bvvlab.models.loader import is_fused_dir, labels, load
from bvvlab.models.fused_model import METHODS, FusedForCausalLM
from bvvlab.models.model import matrix_sha256
from bvvlab.train.shards import TokenShard, encode_texts
from bvvlab.train.validation import evaluate_bpc

class FusionError(BVVError):
    """Experts that cannot be fused, or an output that cannot be written: one line with the fix."""


@dataclass
class FuseConfig:
    """What `bvvlab fuse` sets (built through `bvvlab.core.config.build`)."""

    experts: list[str] = field(default_factory=list)  # expert checkpoints (run folders or step folders), two or more
    method: str = "bayes"  # how predictions are combined: one of METHODS (mean_logits is the published fusion)
    out: str = "runs/fused"  # new or empty folder for the fused checkpoint
    names: list[str] | None = None  # one short name per expert (None: their folder names)
    overwrite: bool = False  # replace an earlier fused checkpoint at out
    entropy_temperature: float | None = None  # entropy method: weights softmax(-H/T) (None: 1.0)
    bayes_decay: float | None = None  # bayes_decay method: evidence decay per token (None: 0.9)

    def validate(self) -> None:
        check_method(self.method)
        if self.names is not None and len(self.names) != len(self.experts):
            raise FusionError(f"{len(self.names)} names for {len(self.experts)} experts; give one name per expert")

    @property
    def options(self) -> dict[str, float]:
        """The method's settings that were given (the fused model's defaults otherwise)."""
        return {k: v for k, v in (("entropy_temperature", self.entropy_temperature),
                                  ("bayes_decay", self.bayes_decay)) if v is not None}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise FusionError(f"unknown fusion method {method!r}; use one of {', '.join(METHODS)}")
    return method


def _tokenizer_digest(tok: Any) -> str:
    """sha256 of the tokenizer's full definition (model, normaliser, pre-tokeniser, special tokens)."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    special = json.dumps(tok.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256((text + special).encode()).hexdigest()


def check_out(out: str | os.PathLike | None, overwrite: bool, experts: Sequence[Path] = ()) -> Path | None:
    """The output folder, checked before any work (`bvvlab.core.outputs` rule): new or empty; with
    `overwrite`, also an earlier fused checkpoint (anything else, an expert above all, is never
    replaced)."""
    if out is None:
        return None
    return check_output(out, "fuse", "fused checkpoint", overwrite, holds=is_fused_dir, inputs=experts,
                        error=FusionError)


def check_names(names: Sequence[str] | None, n: int) -> list[str] | None:
    """One distinct, non-empty name per expert (they key the fused config and `DIR::NAME`)."""
    if names is None:
        return None
    names = list(names)
    if len(names) != n:
        raise FusionError(f"{len(names)} names for {n} experts; give one name per expert")
    bad = [x for x in names if not isinstance(x, str) or not x.strip() or EXPERT_SEP in x]
    if bad:
        raise FusionError(f"--names {bad[0]!r}: give every expert a non-empty name without {EXPERT_SEP!r}")
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise FusionError(f"--names gives {', '.join(twice)} to more than one expert; give each expert its own name")
    return names


def load_experts(paths: Sequence[str | os.PathLike]) -> tuple[list, Any, list[Path]]:
    """(models, tokenizer, resolved dirs) of N >= 2 experts that share vocabulary, tokenizer and
    frozen matrix, loaded through the one loader (`bvvlab.models.loader.load`); one FusionError
    line naming the first pair that does not."""
    if len(paths) < 2:
        raise FusionError(f"fusion needs at least two experts; got {len(paths)}: name two or more checkpoints")
    loaded = []
    for p in paths:
        try:
            lm = load(p)
        except CheckpointError as exc:
            raise FusionError(f"expert {p}: {exc}") from None
        d = lm.path
        if lm.kind != "bvv":
            what = "a fused checkpoint" if lm.kind == "fused" else f"a {lm.model.config.model_type!r} model"
            raise FusionError(f"expert {d} is {what}, not a bvv model: fuse the experts' own checkpoints")
        if not lm.model.config.frozen_embedding:
            raise FusionError(f"expert {d} has a trainable embedding; only experts on one frozen glyph matrix can "
                              "be fused without retraining")
        loaded.append(lm)
    dirs, models, toks = [lm.path for lm in loaded], [lm.model for lm in loaded], [lm.tokenizer for lm in loaded]
    first, m0, t0 = dirs[0], models[0], toks[0]
    h0 = m0.config.embedding_hash or matrix_sha256(m0.model.embed_tokens.weight)
    for d, m, t in zip(dirs[1:], models[1:], toks[1:]):
        if len(t) != len(t0) or t.get_vocab() != t0.get_vocab():
            raise FusionError(f"experts {first} and {d} have different vocabularies ({len(t0)} vs {len(t)} tokens); "
                              "train both on one shared vocabulary (bvvlab embed --vocab compact over both corpora)")
        h = m.config.embedding_hash or matrix_sha256(m.model.embed_tokens.weight)
        if h != h0:
            i0, i = getattr(m0.config, "interface", None) or "glyph", getattr(m.config, "interface", None) or "glyph"
            what = f"interfaces {i0} vs {i}" if i != i0 else f"embedding_hash {h0[:12]}... vs {h[:12]}..."
            raise FusionError(f"experts {first} and {d} have different frozen matrices ({what}); fuse only experts "
                              "trained on one frozen matrix (the same interface, code and vocabulary)")
        if _tokenizer_digest(t) != _tokenizer_digest(t0):
            raise FusionError(f"experts {first} and {d} have the same vocabulary but different tokenizers "
                              "(normaliser, pre-tokeniser or special tokens); fuse experts saved with one tokenizer")
    return models, t0, dirs


def fuse(experts: Sequence[str | os.PathLike], method: str = "bayes", out: str | os.PathLike | None = None,
         names: Sequence[str] | None = None, overwrite: bool = False, **options: Any) -> tuple[FusedForCausalLM, Any]:
    """(fused model, tokenizer) of the experts; saved as one checkpoint directory at `out` when given.
    Every check (method, output folder, experts) runs before anything is written."""
    check_method(method)
    names = check_names(names, len(experts))
    out_path = check_out(out, overwrite, [Path(e) for e in experts if Path(e).exists()])
    models, tok, dirs = load_experts(experts)
    names = list(names) if names is not None else labels(experts)
    try:
        fused = FusedForCausalLM.from_experts(models, method=method, names=names, **options)
    except ValueError as exc:
        raise FusionError(str(exc)) from None
    if out_path is not None:
        meta = {"fusion": {"method": method, "experts": [str(d) for d in dirs], "names": names,
                           "expert_embedding_hash": fused.config.embedding_hash, **options}}
        save_checkpoint(fused, tok, out_path, meta, overwrite=True)
    return fused, tok


# ---------------------------------------------------------------------------------------------
# measurement


def text_shard(tokenizer: Any, texts: Sequence[str]) -> TokenShard:
    """An in-memory TokenShard of `texts` (each document ends with EOS), for `evaluate_bpc`."""
    ids, chars, n_chars = [], [], 0
    for i, c, _, nc in encode_texts(tokenizer, texts):
        ids.append(i)
        chars.append(c)
        n_chars += nc
    if not ids:
        raise ValueError("no texts to measure: give at least one non-empty text")
    return TokenShard(Path("<memory>"), np.concatenate(ids), np.concatenate(chars), {"n_chars": n_chars})


def bpc_by_text(model: Any, tokenizer: Any, texts: Sequence[str], seq_len: int = 128, n_windows: int | None = None,
                batch: int = 8, per_window: bool = False) -> dict[str, Any]:
    """Bits per character of `model` over `texts` (evaluate_bpc over an in-memory shard;
    `per_window`: with each window's bits, for a paired interval)."""
    seq_len = min(seq_len, model.config.max_position_embeddings)
    device = next(model.parameters()).device
    return evaluate_bpc(model, text_shard(tokenizer, texts), seq_len, n_windows, batch, device, per_window=per_window)


def mixed_gain_intervals(windows: dict[str, dict[str, Any]], experts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per fused method: its gain on mixed text over the best expert there (1 - fused/expert),
    with the 95% paired bootstrap over the windows both scored (bvvlab.core.intervals; issue 24)."""
    from bvvlab.core.intervals import paired_gap_interval

    best = min(experts, key=lambda n: windows[n]["val_bpc"])
    out = {}
    for name, w in windows.items():
        if name.startswith("fused:"):
            g = paired_gap_interval(w["val_window_bits"], windows[best]["val_window_bits"], w["val_window_chars"])
            out[name[len("fused:"):]] = {"value": -g["value"], "low": -g["high"], "high": -g["low"], "n": g["n"],
                                         "significant": g["significant"], "expert": best}
    return out


def measure_sets(models: dict[str, Any], tokenizer: Any, sets: dict[str, Sequence[str]], seq_len: int
                 ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Bits/char of every model on every text set, and the "mixed" set window by window (for the
    fused methods' gain intervals, `mixed_gain_intervals`)."""
    bpc, mixed = {}, {}
    for name, model in models.items():
        mixed[name] = bpc_by_text(model, tokenizer, sets["mixed"], seq_len, per_window=True)
        bpc[name] = {k: mixed[name]["val_bpc"] if k == "mixed" else bpc_by_text(model, tokenizer, v, seq_len)["val_bpc"]
                     for k, v in sets.items()}
    return bpc, mixed


def mixed_texts(by_lang: dict[str, Sequence[str]], langs: Sequence[str], n: int) -> list[str]:
    """`n` code-switched documents: document i joins paragraph i of every language in `langs`,
    the order rotating with i (en ru zh, ru zh en, ...), one paragraph per line."""
    out = []
    for i in range(n):
        order = [langs[(i + k) % len(langs)] for k in range(len(langs))]
        out.append("\n".join(by_lang[lang][i % len(by_lang[lang])] for lang in order))
    return out


# ---------------------------------------------------------------------------------------------
# the experiment of issue 13 (notebook 06): two experts on one vocabulary, fused, measured


def experiment(out: str | os.PathLike, preset: str = "tiny", steps: int = 40, train_chars: int | None = 100_000,
               seq_len: int = 64, batch_size: int = 8, lr: float = 2e-3, eval_texts: int = 40, val_chars: int = 20_000,
               methods: Sequence[str] = METHODS, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Train an en-ru and an en-zh expert (same preset, one compact vocabulary and frozen matrix
    covering both corpora), fuse them with every method, and measure validation bits per
    character on English, Russian, Chinese and mixed (code-switched) text, plus the fused
    model's forward time relative to one expert. Re-running with the same `out` reuses
    finished experts (train's resume). Returns (and writes to out/metrics.json) the numbers."""
    import time

    from bvvlab.core.atomic import ensure_dir, write_json_atomic
    from bvvlab.corpus.sources import texts_by_lang
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train.loop import make_config, train

    for m in methods:
        check_method(m)
    out = ensure_dir(out)
    corpora = {"ru": "libreoffice-en-ru", "zh": "libreoffice-en-zh"}
    from bvvlab.models.model import PRESETS

    dim = PRESETS[preset]["hidden_size"] if preset in PRESETS else None
    vocab_dir = out / "vocab"
    if not (vocab_dir / "tokenizer.json").exists():
        prepare_vocabulary("compact", corpus=list(corpora.values()), dim=dim, progress=progress).save(vocab_dir)
    experts = {}
    for lang, corpus in corpora.items():
        cfg = make_config(preset=preset, corpus={corpus: 1.0}, vocab=str(vocab_dir), steps=steps,
                          train_chars=train_chars, val_chars=val_chars, seq_len=seq_len, batch_size=batch_size, lr=lr,
                          seed=seed, out=str(out / f"expert-{lang}"), resume=True, progress=progress,
                          log_every=max(1, steps // 10), eval_every=0, save_every=steps)
        experts[f"en-{lang}"] = train(cfg)
    val = texts_by_lang(list(corpora.values()), split="validation")
    sets = {lang: val[lang][:eval_texts] for lang in ("en", "ru", "zh")}
    sets["mixed"] = mixed_texts(val, ["en", "ru", "zh"], eval_texts)
    models = {}
    for name, path in experts.items():
        lm = load(path)
        models[name], tok = lm.model, lm.tokenizer
    fused_models = {m: FusedForCausalLM.from_experts(list(models.values()), method=m, names=list(models))
                    for m in methods}
    bpc, mixed = measure_sets({**models, **{f"fused:{m}": f for m, f in fused_models.items()}}, tok, sets, seq_len)
    fuse(list(experts.values()), "bayes", out / "fused", names=list(models), overwrite=True)
    # speed: forward over one batch of windows, fused (bayes) vs the first expert
    ids = torch.from_numpy(text_shard(tok, sets["mixed"]).tokens[: batch_size * seq_len].astype(np.int64))
    ids = ids[: (ids.numel() // seq_len) * seq_len].view(-1, seq_len)

    def clock(model: Any) -> float:
        with torch.no_grad():
            model(ids, use_cache=False)
            t0 = time.perf_counter()
            for _ in range(3):
                model(ids, use_cache=False)
        return (time.perf_counter() - t0) / 3

    one = clock(next(iter(models.values())))
    fz = clock(fused_models.get("bayes", next(iter(fused_models.values()))))
    names = list(models)
    goal = {}
    for m in methods:
        f = bpc[f"fused:{m}"]
        best_mixed = min(bpc[n]["mixed"] for n in names)
        per_lang = {k: f[k] / min(bpc[n][k] for n in names) - 1 for k in ("en", "ru", "zh")}
        goal[m] = {"mixed_gain_vs_best_expert": 1 - f["mixed"] / best_mixed,
                   "worst_gap_to_better_expert": max(per_lang.values()),
                   "met": 1 - f["mixed"] / best_mixed >= 0.10 and max(per_lang.values()) <= 0.05}
    metrics = {"budget": {"preset": preset, "steps": steps, "train_chars": train_chars, "seq_len": seq_len,
                          "batch_size": batch_size, "eval_texts": eval_texts, "val_chars": val_chars, "seed": seed},
               "bpc": bpc, "goal": goal, "intervals": mixed_gain_intervals(mixed, names),
               "forward_s": {"one_expert": one, "fused": fz, "ratio": fz / one},
               "experts": {k: str(v) for k, v in experts.items()}, "fused_dir": str(out / "fused")}
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
