"""Probing: where meaning appears across the layers of a causal LM (issue 11).

`probe_models` loads each checkpoint, reads every layer's states for the items, computes the
per-layer metrics (bvvlab.analysis.metrics) and the logit lens, and `write_run` saves
metrics.json, the tables and the figures into a probe folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bvvlab.analysis.activations import (
    POOLINGS,
    Loaded,
    States,
    check_layers,
    hidden_states,
    load_model,
    load_models,
)
from bvvlab.analysis.figures import (
    cka_heatmap,
    latent_figure,
    markdown_table,
    metric_curves,
    slider_figure,
)
from bvvlab.analysis.items import (
    Item,
    ProbeError,
    check_translations,
    load_items,
)
from bvvlab.analysis.latent import latent_language
from bvvlab.analysis.maps import MAP_METHODS, layer_maps
from bvvlab.analysis.metrics import (
    check_folds,
    cka_matrix,
    resolve_metrics,
    retrieval,
    submit_layer_metrics,
)
from bvvlab.analysis.workers import probe_pool
from bvvlab.core.config import at_least, one_of
from bvvlab.models.loader import labels


def probe_models(paths: Sequence[str], items: Sequence[Item], pooling: str = "last", layers: Sequence[int] | None = None,
                 folds: int = 5, device: str = "cpu", batch_size: int = 64, latent: bool = True,
                 cka_level: str = "item", max_tokens: int | None = 64, seed: int = 0,
                 lms: Sequence[Loaded] | None = None, jobs: int | None = None, trust_remote_code: bool = False
                 ) -> tuple[dict[str, Any], dict[str, States], dict[str, Loaded]]:
    """Load every model, compute its states and metrics, CKA of the first against each model
    (itself included). Returns (metrics, states by model, loaded models). The forward passes run
    first; then the per-layer metrics run in `jobs` worker processes (`probe_pool`; default: the
    usable cores, at most 4). The results do not depend on `jobs`. Models are labelled by the one
    naming rule of every table (`bvvlab.models.loader.labels`); `trust_remote_code` lets a foreign
    Hugging Face folder run the code it ships (never needed for bvvlab's own)."""
    if pooling not in POOLINGS:
        raise ProbeError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    if cka_level not in ("item", "token"):
        raise ProbeError(f"cka level {cka_level!r}: use 'item' or 'token'")
    items = list(items)
    if any(it.pair for it in items):
        check_translations(items)
    check_folds(len({it.cv_group for it in items}), folds)
    t0 = time.perf_counter()
    lms = list(lms) if lms is not None else [lm for p, n in zip(paths, labels(paths))
                                             for lm in load_models(p, device, n, trust_remote_code)]
    for lm in lms:
        check_layers(layers, lm.n_layers)
    states: dict[str, States] = {}
    lat: dict[str, Any] = {}
    for lm in lms:  # every forward first, with all of torch's threads (matmul-bound: sharing cores slows it 2x)
        states[lm.name] = hidden_states(lm, items, pooling, batch_size, layers, max_tokens, lens=True)
        if latent:
            lat[lm.name] = {d: latent_language(lm, d, seed=seed) for d in ("en2ru", "ru2en")}
    results: dict[str, Any] = {}
    with probe_pool(jobs) as pool:  # then the per-layer metrics, in the workers
        for lm in lms:
            m = submit_layer_metrics(states[lm.name], items, folds, seed, True, ("en", "ru"), pool)
            m.update(path=lm.path, n_layers=lm.n_layers, model_class=type(lm.model).__name__, expert=lm.expert)
            if latent:
                m["latent_language"] = lat[lm.name]
            results[lm.name] = m
        results = {name: resolve_metrics(m) for name, m in results.items()}
    ref = lms[0]
    cka: dict[str, Any] = {}
    for lm in lms:
        if cka_level == "token":
            ta, tb = states[ref.name].token_ids, states[lm.name].token_ids
            if ta != tb:
                raise ProbeError(f"token-by-token CKA of {ref.name} and {lm.name} needs the same tokenization, and their "
                                 "tokenizers split the items differently: compare item by item (--cka-level item)")
            A = hidden_states(ref, items, "tokens", batch_size, layers, max_tokens).pooled
            B = hidden_states(lm, items, "tokens", batch_size, layers, max_tokens).pooled
        else:
            A, B = states[ref.name].pooled, states[lm.name].pooled
        cka[lm.name] = {"reference": ref.name, "level": cka_level,
                        "matrix": cka_matrix(A, B).tolist(), "layers_a": states[ref.name].layers,
                        "layers_b": states[lm.name].layers}
    meta = {"pooling": pooling, "folds": folds, "n_items": len(items), "seconds": round(time.perf_counter() - t0, 3),
            "items": {"n_heldout": sum(it.heldout for it in items),
                      "langs": sorted({it.lang for it in items}), "labels": sorted({it.label for it in items})}}
    return {"meta": meta, "models": results, "cka": cka}, states, {lm.name: lm for lm in lms}


def write_run(out: str | os.PathLike, metrics: dict[str, Any], states: dict[str, States], items: Sequence[Item],
              umap: bool | str = True, seed: int = 0, overwrite: bool = False) -> Path:
    """metrics.json, metrics.md and the figures into `out`, all or nothing (atomic folder)."""
    from bvvlab.core.atomic import atomic_dir, write_json_atomic

    out = Path(out)
    method = umap if isinstance(umap, str) else ("umap" if umap else "pca")  # True, False or a MAP_METHODS name
    if method not in MAP_METHODS:
        raise ProbeError(f"map method {method!r}: use one of {', '.join(MAP_METHODS)}")
    with atomic_dir(out, replace=overwrite) as tmp:
        figs = {}
        t0 = time.perf_counter()
        for name, st in states.items():
            safe = name.replace("/", "_").replace("#", "_")
            fig = slider_figure(layer_maps(st, method, seed), items, st.layers, title=f"{name}: {method.upper()} per layer")
            figs[f"map_{safe}.html"] = fig
        metrics["meta"]["map_method"] = method
        metrics["meta"]["map_seconds"] = round(time.perf_counter() - t0, 3)
        figs["metrics_by_layer.html"] = metric_curves(metrics["models"])
        for name, c in metrics["cka"].items():
            figs[f"cka_{name.replace('/', '_').replace('#', '_')}.html"] = cka_heatmap(
                np.array(c["matrix"]), c["reference"], name, c["layers_a"], c["layers_b"])
        lat = {f"{n} {d}": r for n, m in metrics["models"].items() for d, r in (m.get("latent_language") or {}).items()}
        if any(r.get("available") for r in lat.values()):
            figs["latent_language.html"] = latent_figure(lat)
        for fname, fig in figs.items():
            fig.write_html(tmp / fname, include_plotlyjs="directory")
        metrics["meta"]["figures"] = sorted(figs)
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "metrics.md").write_text(markdown_table(metrics["models"]), encoding="utf-8")
    return out


# ============================================================================ the command's config


@dataclass
class ProbeConfig:
    """What `bvvlab probe` and notebook 03 set (built through `bvvlab.core.config.build`, so a wrong
    value is the same line on every surface)."""

    checkpoints: list[str] = field(default_factory=list)  # run, step, HF or fused folders (DIR::NAME: one expert)
    items: str = "concepts"  # concepts, sentences, or a .csv/.jsonl file (text, label, lang, pair)
    out: str = "runs/probe"  # output folder (metrics.json, metrics.md, figures)
    umap: bool | str = True  # maps per layer: True UMAP, False PCA (fast), or "aligned-umap" (AlignedUMAP)
    pooling: str = "last"  # item vector: the last token, or the mean over its tokens
    device: str = "cpu"  # auto, cpu, cuda or cuda:N
    trust_remote_code: bool = False  # let a foreign Hugging Face folder run the code it ships (never needed for bvvlab's)
    layers: list[int] | None = None  # hidden-state indices (None: all; 0 = the embedding output)
    folds: int = 5  # cross-validation folds of the probes
    heldout: str | list[str] = "auto"  # concepts reported apart: auto, suite, ids ("a,b" or a list), "" for none
    limit: int | None = None  # at most this many pairs (concepts, or sentences of each source); None: all
    batch_size: int = 64  # items per forward pass
    cka_level: str = "item"  # CKA over pooled items (any tokenizers) or over tokens (same tokenizer only)
    latent: bool = True  # the latent-language view (translation prompts)
    overwrite: bool = False  # replace an existing out folder
    seed: int = 0  # seeds the probes' folds and the maps
    jobs: int | None = None  # worker processes for the per-layer metrics (None: the usable cores, at most 4; 0: none)

    def validate(self) -> None:
        if isinstance(self.umap, str):
            one_of("umap", self.umap, (True, False) + MAP_METHODS)
        one_of("pooling", self.pooling, POOLINGS)
        at_least("folds", self.folds, 2, "cross-validation folds of the probes")
        at_least("limit", self.limit, 1, "pairs to probe; none: all")
        at_least("batch_size", self.batch_size, 1, "items per forward pass")
        one_of("cka_level", self.cka_level, ("item", "token"))
        if self.jobs is not None and self.jobs < 0:
            raise ProbeError(f"--jobs {self.jobs}: give a number of worker processes, 0 or more (0 fits in this process)")


def probe_runs(runs: dict[str, str | Path], concepts: int = 24, device: str = "cpu") -> dict[str, Any]:
    """Cross-lingual retrieval per layer (bvvlab.analysis.probe: the en and ru lemma of `concepts` concepts of
    the lexicon, last-token states, cosine after centring each language, top-1 averaged over both
    directions) of each named run: stage checkpoints and baselines. Layer 0 is the frozen
    embedding's output (the same in every run), layer k the output of block k (the last one after
    the final norm)."""
    items = load_items("concepts", limit=concepts)
    out: dict[str, Any] = {"items": len(items), "concepts": len({it.pair for it in items}), "runs": {}}
    for name, path in runs.items():
        st = hidden_states(load_model(str(path), device, name=name), items, "last")
        per = [retrieval(np.asarray(st.pooled[k], dtype=np.float32), items) for k in range(len(st.layers))]
        out["runs"][name] = {"path": str(path), "layers": list(st.layers), "top1": [r["top1"] for r in per],
                             "mrr": [(r["mrr_en2ru"] + r["mrr_ru2en"]) / 2 for r in per],
                             "chance_top1": per[0]["chance_top1"]}
    return out
