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

from bvvlab.analysis.contexts import CONTEXTS, context_states
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
    latent_results,
    markdown_table,
    metric_curves,
    null_band_figure,
    slider_figure,
    stats_table,
)
from bvvlab.analysis.items import (
    ANCHORS,
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
from bvvlab.analysis.stats import compare, layer_report, pair_keys, paired_index
from bvvlab.analysis.workers import probe_pool
from bvvlab.models.checkpoints import EXPERT_SEP
from bvvlab.core.config import at_least, one_of
from bvvlab.models.loader import labels
from bvvlab.core.errors import BVVError, check_text
from bvvlab.core.outputs import check_output, mark_output, write_figure

PERMUTATIONS = 1000  # default re-pairings of the retrieval null


def probe_models(paths: Sequence[str], items: Sequence[Item], pooling: str = "last", layers: Sequence[int] | None = None,
                 folds: int = 5, device: str = "cpu", batch_size: int = 64, latent: bool = True,
                 cka_level: str = "item", max_tokens: int | None = None, seed: int = 0,
                 lms: Sequence[Loaded] | None = None, jobs: int | None = None, trust_remote_code: bool = False,
                 contexts: Any = None, permutations: int = PERMUTATIONS, langs: tuple[str, str] = ("en", "ru"),
                 tuned_lens: bool = True) -> tuple[dict[str, Any], dict[str, States], dict[str, Loaded]]:
    """Load every model, compute its states and metrics, CKA of the first against each model
    (itself included). Returns (metrics, states by model, loaded models). The forward passes run
    first; then the per-layer metrics run in `jobs` worker processes (`probe_pool`; default: the
    usable cores, at most 4). The results do not depend on `jobs`. Models are labelled by the one
    naming rule of every table (`bvvlab.models.loader.labels`); `trust_remote_code` lets a foreign
    Hugging Face folder run the code it ships (never needed for bvvlab's own).

    `contexts` (an `analysis.contexts.ContextSet` whose `items` are `items`): words in context,
    each item's vector the mean over its word's tokens averaged over its contexts. `max_tokens`:
    an item longer than this is refused in one line (nothing is cut silently; None: no limit).
    `permutations`: re-pairings of the stratified retrieval null (`analysis.stats`); every
    retrieval figure of every layer then carries its null, p-values and bootstrap interval.
    `latent` with `tuned_lens`: the latent-language view through the tuned lens as well
    (`latent_views`), beside the logit lens."""
    items = list(items)
    check_inputs(items, pooling, cka_level, permutations, folds, langs)
    t0 = time.perf_counter()
    lms = list(lms) if lms is not None else [lm for p, n in zip(paths, labels(paths))
                                             for lm in load_models(p, device, n, trust_remote_code)]
    for lm in lms:
        check_layers(layers, lm.n_layers)
    states: dict[str, States] = {}
    lengths: dict[str, dict[int, tuple[int, int]]] = {}
    lat: dict[str, Any] = {}
    for lm in lms:  # every forward first, with all of torch's threads (matmul-bound: sharing cores slows it 2x)
        if contexts is not None:
            states[lm.name], lengths[lm.name] = context_states(lm, contexts, batch_size, layers, max_tokens, lens=True)
        else:
            check_lengths(lm, items, max_tokens)
            states[lm.name] = hidden_states(lm, items, pooling, batch_size, layers, max_tokens, lens=True)
            lengths[lm.name] = {i: (len(it.text), n) for i, (it, n) in enumerate(zip(items, map(len, states[lm.name].token_ids)))}
        if latent:
            lat[lm.name] = latent_views(lm, seed, tuned_lens)
    results: dict[str, Any] = {}
    with probe_pool(jobs) as pool:  # then the per-layer metrics, in the workers
        reports = {}
        for lm in lms:
            reports[lm.name] = submit_reports(pool, np.asarray(states[lm.name].pooled), items, lengths[lm.name],
                                              permutations, seed, langs)
            m = submit_layer_metrics(states[lm.name], items, folds, seed, True, langs, pool)
            m.update(path=lm.path, n_layers=lm.n_layers, model_class=type(lm.model).__name__, expert=lm.expert)
            if latent:
                m["latent_language"], tuned = lat[lm.name]
                if tuned is not None:
                    m["latent_language_tuned"] = tuned
            results[lm.name] = m
        results = {name: resolve_metrics(m) for name, m in results.items()}
        for name, reps in reports.items():
            if "main" in reps:
                attach_stats(results[name], reps["main"].result())
            if "anchored" in reps:  # sentence pairs sharing a Latin/digit string, reported apart
                rep = reps["anchored"].result()
                results[name]["stats_anchored"] = {"n_pairs": rep["n_pairs"],
                                                   "retrieval": [L["cosine"] for L in rep["layers"]]}
    cka = cka_against_first(lms, states, items, cka_level, batch_size, layers, max_tokens)
    meta = {"pooling": pooling, "folds": folds, "n_items": len(items), "seconds": round(time.perf_counter() - t0, 3),
            "items": {"n_heldout": sum(it.heldout for it in items),
                      "langs": sorted({it.lang for it in items}), "labels": sorted({it.label for it in items})}}
    meta.update(permutations=permutations, items_kind="contexts" if contexts is not None else "items",
                max_tokens=max_tokens, langs=list(langs), galleries=len({it.gallery for it in items}),
                n_anchored_pairs=len({it.pair for it in items if it.anchored}))
    if contexts is not None:
        meta.update(n_contexts=len(contexts.texts), notes=contexts.notes)
    return ({"meta": meta, "models": results, "cka": cka, "comparisons": compare_models(results)}, states,
            {lm.name: lm for lm in lms})


def check_inputs(items: list[Item], pooling: str, cka_level: str, permutations: int, folds: int,
                 langs: tuple[str, str]) -> None:
    """One line for the first bad argument of `probe_models`, before any model is loaded."""
    if pooling not in POOLINGS:
        raise ProbeError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    if cka_level not in ("item", "token"):
        raise ProbeError(f"cka level {cka_level!r}: use 'item' or 'token'")
    for k, it in enumerate(items):  # a lone surrogate reaches the tokenizer as a TypeError otherwise
        try:
            check_text(it.text, "its text")
        except BVVError as exc:
            raise ProbeError(f"item {k + 1} ({repr(it.text)[:30]}): {exc}") from None
    if any(it.pair for it in items):
        check_translations(items, langs)
    if permutations < 1:
        raise ProbeError(f"--permutations {permutations}: the retrieval null needs at least 1 re-pairing (1000 is the "
                         "default)")
    check_folds(len({it.cv_group for it in items}), folds)


def latent_views(lm: Loaded, seed: int = 0, tuned: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The latent-language view both ways through the logit lens and (with `tuned`) through a
    tuned lens fitted on held-out text (`analysis.tuned_lens`, Belrose et al. 2023): the plain
    logit lens reads early layers through a head trained on the last one, so an early-layer
    counterpart there may be the lens's bias. Each gives answer, counterpart and control word of
    the prompt with intervals. A model without a lens gets one reason line in both."""
    from bvvlab.analysis.tuned_lens import fit_tuned_lens, tuned_latent

    logit = {d: latent_language(lm, d, seed=seed) for d in ("en2ru", "ru2en")}
    if not tuned:
        return logit, None
    if lm.head is None or lm.norm is None:
        reason = {"available": False, "reason": f"tuned lens unavailable for {lm.name}: {lm.lens_reason}"}
        return logit, {d: reason for d in logit}
    lens = fit_tuned_lens(lm)
    return logit, {d: tuned_latent(lm, lens, d, seed=seed) | {"fit_tokens": lens.n_tokens} for d in logit}


def submit_reports(pool: Any, pooled: np.ndarray, items: Sequence[Item], lengths: dict[int, tuple[int, int]],
                   permutations: int, seed: int, langs: tuple[str, str]) -> dict[str, Any]:
    """The statistics (`analysis.stats.layer_report`) as pool jobs: "main" over the pairs without a
    lexical anchor, "anchored" over the pairs flagged `Item.anchored` (sentences sharing a Latin or
    digit string, `--anchors apart`), each where it has at least 8 items of the two languages."""
    out = {}
    for part, rows in (("main", [i for i, it in enumerate(items) if not it.anchored]),
                       ("anchored", [i for i, it in enumerate(items) if it.anchored])):
        sub = [items[i] for i in rows]
        if sum(it.lang in langs and bool(it.pair) for it in sub) < 8:
            continue
        ia, ib, _ = paired_index(sub, langs)
        lens = {j: lengths[i] for j, i in enumerate(rows) if i in lengths}
        keys = pair_keys(sub, ia, ib, word_lengths=lens)
        out[part] = pool.submit(layer_report, pooled[:, rows] if len(rows) < len(items) else pooled, sub, permutations,
                                seed, langs, keys)
    return out


def compare_models(results: dict[str, Any]) -> dict[str, Any]:
    """The first model minus each other one (paired bootstrap over concepts, `analysis.stats.compare`)."""
    names = [n for n in results if results[n].get("stats")]
    return {f"{names[0]} - {other}": compare(results[names[0]]["stats"], results[other]["stats"]) for other in names[1:]}

def cka_against_first(lms: Sequence[Loaded], states: dict[str, States], items: Sequence[Item], cka_level: str,
                      batch_size: int, layers: Sequence[int] | None, max_tokens: int | None) -> dict[str, Any]:
    """Linear CKA layer x layer of the first model against each model (itself included), over
    pooled items, or token by token where the tokenizers split the items alike."""
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
    return cka


def check_lengths(lm: Loaded, items: Sequence[Item], max_tokens: int | None) -> None:
    """One line for the first item longer than `max_tokens` tokens (no silent truncation)."""
    if max_tokens is None:
        return
    for it in items:
        n = len(lm.tokenizer(it.text, add_special_tokens=False)["input_ids"])
        if n > max_tokens:
            raise ProbeError(f"item {it.text[:60]!r} is {n} tokens, over --max-tokens {max_tokens}: raise --max-tokens "
                             "or drop the item (nothing is cut silently)")


def attach_stats(m: dict[str, Any], report: dict[str, Any]) -> None:
    """Every retrieval figure of every layer gets its permutation null and bootstrap interval
    (`retrieval[k]["null"]`: top1 / mrr / median_rank / auc, each value, null_mean, null_high, p,
    p_fwe, low, high); CSLS retrieval, the gain over layer 0, cross-lingual CKA and RSA by layer."""
    layers = report["layers"]
    for k, r in enumerate(m.get("retrieval") or []):
        if isinstance(r, dict) and k < len(layers):
            r["null"] = layers[k]["cosine"]
    m["retrieval_csls"] = [l["csls"] for l in layers]
    # the statistics compare every layer with the first one probed: a gain over layer 0 only when
    # that is layer 0 (with --layers 2,4 it would be a gain over layer 2 under layer 0's name)
    first = (m.get("layers") or [0])[0]
    m["gain_vs_layer0"] = [l["gain_mrr_vs_layer0"] if first == 0 else None for l in layers]
    m["crosslingual_cka"] = [l["cka"] for l in layers]
    m["crosslingual_rsa"] = [l["rsa"] for l in layers]
    m["stats"] = {k: v for k, v in report.items() if k != "layers"}


def write_run(out: str | os.PathLike, metrics: dict[str, Any], states: dict[str, States], items: Sequence[Item],
              umap: bool | str = True, seed: int = 0, overwrite: bool = False) -> Path:
    """metrics.json, metrics.md and the figures into `out`, all or nothing (atomic folder). `out`
    must be new or empty, or (with `overwrite`) an earlier probe result (`check_out`)."""
    from bvvlab.core.atomic import atomic_dir, write_json_atomic

    method = umap if isinstance(umap, str) else ("umap" if umap else "pca")  # True, False or a MAP_METHODS name
    if method not in MAP_METHODS:
        raise ProbeError(f"map method {method!r}: use one of {', '.join(MAP_METHODS)}")
    read = [str(m["path"]).partition(EXPERT_SEP)[0] for m in metrics.get("models", {}).values() if m.get("path")]
    out = check_out(out, overwrite, read)
    with atomic_dir(out, replace=True) as tmp:
        figs = {}
        t0 = time.perf_counter()
        for name, st in states.items():
            safe = name.replace("/", "_").replace("#", "_")
            fig = slider_figure(layer_maps(st, method, seed), items, st.layers, title=f"{name}: {method.upper()} per layer")
            figs[f"map_{safe}.html"] = fig
        metrics["meta"]["map_method"] = method
        metrics["meta"]["map_seconds"] = round(time.perf_counter() - t0, 3)
        figs["metrics_by_layer.html"] = metric_curves(metrics["models"])
        if any(m.get("stats") for m in metrics["models"].values()):
            figs["retrieval_null.html"] = null_band_figure(metrics["models"])
        for name, c in metrics["cka"].items():
            figs[f"cka_{name.replace('/', '_').replace('#', '_')}.html"] = cka_heatmap(
                np.array(c["matrix"]), c["reference"], name, c["layers_a"], c["layers_b"])
        lat = latent_results(metrics["models"])
        if any(r.get("available") for r in lat.values()):
            figs["latent_language.html"] = latent_figure(lat)
        for fname, fig in figs.items():
            write_figure(fig, tmp / fname)
        metrics["meta"]["figures"] = sorted(figs)
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "metrics.md").write_text(markdown_table(metrics["models"]) + "\n" + stats_table(metrics["models"]),
                                        encoding="utf-8")
        mark_output(tmp, "probe")
    return out


def _holds_probe(folder: Path) -> bool:
    """A probe folder written before markers existed: its metrics.json has models and cka."""
    import json

    try:
        m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and {"models", "cka", "meta"} <= set(m)


def check_out(out: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """The probe's output folder, checked before any work: new or empty, or with `overwrite` an
    earlier probe result; never a checkpoint it reads, a training run or anyone's other folder."""
    return check_output(out, "probe", "probe result", overwrite, holds=_holds_probe, inputs=inputs,
                        error=ProbeError)


# ============================================================================ the command's config


@dataclass
class ProbeConfig:
    """What `bvvlab probe` and notebook 03 set (built through `bvvlab.core.config.build`, so a wrong
    value is the same line on every surface)."""

    checkpoints: list[str] = field(default_factory=list)  # run, step, HF or fused folders (DIR::NAME: one expert)
    items: str = "concepts"  # concepts (words in context), lemmas (bare lemmas), sentences, or a .csv/.jsonl file
    contexts: int = CONTEXTS  # contexts per concept and language (items=concepts)
    permutations: int = PERMUTATIONS  # re-pairings of the stratified permutation null of retrieval
    max_tokens: int | None = None  # refuse items longer than this many tokens (None: no limit; nothing is cut)
    anchors: str = "drop"  # items=sentences: pairs sharing a Latin/digit string: drop, apart (reported apart) or keep
    langs: list[str] = field(default_factory=lambda: ["en", "ru"])  # the two languages of the pairs (en,enx: the clone)
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
    tuned_lens: bool = True  # the latent-language view through a tuned lens too (fitted on held-out text)
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
        at_least("contexts", self.contexts, 1, "contexts per concept and language")
        at_least("permutations", self.permutations, 1, "re-pairings of the retrieval null")
        at_least("max_tokens", self.max_tokens, 1, "tokens per item; none: no limit")
        one_of("anchors", self.anchors, ANCHORS)
        if len(self.langs) != 2 or self.langs[0] == self.langs[1]:
            raise ProbeError(f"langs={','.join(self.langs)}: give two different languages, e.g. en,ru")
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


def checkpoint_series(run: str | Path) -> list[Path]:
    """A run's saved checkpoints in step order (`step_N` folders under `run/checkpoints`, kept by
    `keep_last` / `save_every`), for emergence over training. They must share one tokenizer (the
    same items, the same token spans): one line naming the first that does not."""
    import hashlib

    root = Path(run)
    folder = root / "checkpoints" if (root / "checkpoints").is_dir() else root
    steps = sorted((p for p in folder.glob("step_*") if p.is_dir() and p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    if not steps:
        raise ProbeError(f"{run} holds no step_N checkpoints: train with save_every and keep_last large enough to keep them")

    def digest(p: Path) -> str:
        f = p / "tokenizer.json"
        return hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else ""

    first = digest(steps[0])
    for p in steps[1:]:
        if digest(p) != first:
            raise ProbeError(f"{p} has a different tokenizer from {steps[0]}: the checkpoints of one series must share "
                             "one tokenizer (probe them apart)")
    return steps
