"""Per-layer probe metrics, each with its chance level: cross-lingual retrieval (cosine after
centring each language; top-1 and MRR, both directions), logistic-regression probes for category
and language (GroupKFold, groups = concepts), silhouettes, retrieval after removing the language
direction (mean difference + LDA), linear CKA; `layer_metrics` runs them as jobs of the pool."""

from __future__ import annotations

import functools
import math
import warnings
from concurrent.futures import Future, wait
from typing import Any, Sequence

import numpy as np

from bvvlab.analysis.activations import States
from bvvlab.analysis.items import Item, ProbeError, check_translations
from bvvlab.analysis.workers import probe_pool
from bvvlab.core.config import at_least

WINDOW_BYTES = 64 << 20  # states larger than this are sent to the metric workers a few layers at a time


# ============================================================================ metrics on vectors


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def retrieval_ranks(Q: np.ndarray, G: np.ndarray, q_pair: Sequence[str], g_pair: Sequence[str],
                    centre: bool = True, q_gallery: Sequence[str] | None = None,
                    g_gallery: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query, the rank (1 = first) of its best-ranked translation among the gallery by
    cosine similarity (each side centred on its own mean when `centre`); ties count against the
    query. `q_gallery`/`g_gallery` (`Item.gallery`): a query is ranked only among gallery items of
    its own gallery (chance follows that gallery's size). Returns (ranks, chance top-1, chance
    reciprocal rank) per query."""
    Q, G = np.asarray(Q, np.float64), np.asarray(G, np.float64)
    if centre:
        Q, G = Q - Q.mean(0), G - G.mean(0)
    S = _unit(Q) @ _unit(G).T
    qp, gp = np.asarray(q_pair), np.asarray(g_pair)
    same = qp[:, None] == gp[None, :]
    if not same.any(1).all():
        bad = qp[~same.any(1)][0]
        raise ProbeError(f"query pair {bad!r} has no translation in the gallery")
    inside = (np.asarray(q_gallery)[:, None] == np.asarray(g_gallery)[None, :] if q_gallery is not None
              else np.ones_like(same))
    best = np.where(same, S, -np.inf).max(1)
    ranks = 1 + (np.where(same | ~inside, -np.inf, S) >= best[:, None] - 1e-12).sum(1)
    n = inside.sum(1)
    m = same.sum(1)
    c1 = m / n
    crr = np.array([_chance_rr(int(g), int(k)) for g, k in zip(n, m)])
    return ranks, c1, crr


@functools.lru_cache(maxsize=4096)
def _chance_rr(n: int, m: int) -> float:
    """E[1 / rank of the best of m correct items] in a random order of n."""
    # P(best at r) = C(n - r, m - 1) / C(n, m)
    r = np.arange(1, n - m + 2)
    logp = (_lgamma(n - r + 1) - _lgamma(m) - _lgamma(n - r - m + 2)) - (_lgamma(n + 1) - _lgamma(m + 1) - _lgamma(n - m + 1))
    return float(np.sum(np.exp(logp) / r))


def _lgamma(x):
    return np.vectorize(math.lgamma)(np.asarray(x, dtype=np.float64))


def retrieval(X: np.ndarray, items: Sequence[Item], langs: tuple[str, str] = ("en", "ru"), centre: bool = True,
              subsets: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Cross-lingual retrieval both ways, top-1 and MRR with their chance levels, each query ranked
    among the items of its own `Item.gallery`; `subsets` (name -> boolean mask over items) reports
    the same over query subsets (the gallery stays whole)."""
    a, b = langs
    la = np.array([it.lang == a and bool(it.pair) for it in items])
    lb = np.array([it.lang == b and bool(it.pair) for it in items])
    pairs = np.array([it.pair for it in items])
    gal = np.array([it.gallery for it in items])
    if not la.any() or not lb.any():
        return {"available": False, "reason": f"no paired {a} and {b} items"}
    out: dict[str, Any] = {"available": True, "n_queries": {f"{a}2{b}": int(la.sum()), f"{b}2{a}": int(lb.sum())}}
    for src, dst, name in ((la, lb, f"{a}2{b}"), (lb, la, f"{b}2{a}")):
        ranks, c1, crr = retrieval_ranks(X[src], X[dst], pairs[src], pairs[dst], centre, gal[src], gal[dst])
        out[f"top1_{name}"] = float(np.mean(ranks == 1))
        out[f"mrr_{name}"] = float(np.mean(1.0 / ranks))
        out[f"chance_top1_{name}"] = float(np.mean(c1))
        out[f"chance_mrr_{name}"] = float(np.mean(crr))
        for sub, mask in (subsets or {}).items():
            sel = mask[src]
            if sel.any():
                out[f"top1_{name}_{sub}"] = float(np.mean(ranks[sel] == 1))
                out[f"mrr_{name}_{sub}"] = float(np.mean(1.0 / ranks[sel]))
    out["top1"] = (out[f"top1_{a}2{b}"] + out[f"top1_{b}2{a}"]) / 2
    out["chance_top1"] = (out[f"chance_top1_{a}2{b}"] + out[f"chance_top1_{b}2{a}"]) / 2
    return out


def remove_language_directions(X: np.ndarray, langs: Sequence[str], method: str = "lda",
                               shrink: float = 0.1) -> np.ndarray:
    """X with each language centred on its own mean and the direction that separates the
    languages projected out: "mean" (the mean difference, Chang et al. 2022) or "lda" (the
    Fisher direction, within-language covariance shrunk towards a multiple of the identity).
    Only two-language sets: the direction is one vector."""
    X = np.asarray(X, np.float64)
    L = np.asarray(langs)
    names = sorted(set(L))
    if len(names) != 2:
        raise ProbeError(f"removing the language direction needs two languages, got {names}")
    mus = [X[L == n].mean(0) for n in names]
    diff = mus[0] - mus[1]
    if method == "lda":
        Xc = np.concatenate([X[L == n] - mu for n, mu in zip(names, mus)])
        Sw = Xc.T @ Xc / max(1, len(Xc) - 2)
        Sw = (1 - shrink) * Sw + shrink * np.trace(Sw) / Sw.shape[0] * np.eye(Sw.shape[0])
        # least squares, not solve: a layer whose items share one vector per language (last-token
        # pooling of words ending in one token) has Sw = 0, where the Fisher direction is undefined
        # and the mean difference is what is left to remove
        w = np.linalg.lstsq(Sw, diff, rcond=None)[0] if np.trace(Sw) > 0 else diff
    elif method == "mean":
        w = diff
    else:
        raise ProbeError(f"method {method!r}: use 'mean' or 'lda'")
    w = w / max(np.linalg.norm(w), 1e-12)
    out = X.copy()
    for n, mu in zip(names, mus):
        out[L == n] -= mu
    return out - np.outer(out @ w, w)


def check_folds(n_groups: int, folds: int) -> None:
    """Grouped k-fold cross-validation needs k >= 2 folds and at least k groups (concepts): one
    line otherwise, with a fix that differs from what was given (with fewer than 2 concepts no
    number of folds helps: more items do)."""
    at_least("folds", folds, 2, "cross-validation folds of the probes")
    if n_groups < 2:
        raise ProbeError(f"{n_groups} group{'s' if n_groups != 1 else ''} (concepts): the probes' cross-validation "
                         "needs at least 2 concepts; give more items (a larger limit, or none for all)")
    if n_groups < folds:
        raise ProbeError(f"{n_groups} groups (concepts) but {folds} cross-validation folds: give at least {folds} "
                         f"concepts or fewer folds (--folds {n_groups})")


def probe_accuracy(X: np.ndarray, y: Sequence[str], groups: Sequence[str], folds: int = 5, seed: int = 0,
                   max_iter: int = 100) -> dict[str, Any]:
    """Cross-validated accuracy of a logistic-regression probe, groups kept together (GroupKFold:
    a probe never sees the tested concept), beside the majority-class baseline of the same folds.
    The fits run with one BLAS thread: at these sizes more threads only spin against each other and
    against torch's (7x slower with 2 threads on 2 cores, measured)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y, groups = np.unique(np.asarray(y), return_inverse=True)[1], np.asarray(groups)  # int labels: a faster fit
    check_folds(len(set(groups.tolist())), folds)
    if len(set(y.tolist())) < 2:
        return {"available": False, "reason": "one class only"}
    correct = base = 0
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
            if len(set(y[tr].tolist())) < 2:
                pred = np.full(len(te), y[tr][0])
            else:
                sc = StandardScaler().fit(X[tr])
                clf = LogisticRegression(max_iter=max_iter, tol=1e-3, C=1.0, random_state=seed).fit(sc.transform(X[tr]),
                                                                                                   y[tr])
                pred = clf.predict(sc.transform(X[te]))
            correct += int((pred == y[te]).sum())
            vals, counts = np.unique(y[tr], return_counts=True)
            base += int((y[te] == vals[np.argmax(counts)]).sum())
    return {"available": True, "accuracy": correct / len(y), "chance": base / len(y), "folds": folds}


def silhouette(X: np.ndarray, labels: Sequence[str]) -> float | None:
    """Cosine silhouette of `labels` (None with fewer than two labels or a label per item); one
    BLAS thread, as in `probe_accuracy`, so the value is the same in a worker process or here."""
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    k = len(set(labels.tolist()))
    if k < 2 or k >= len(labels):
        return None
    with threadpool_limits(1):
        return float(silhouette_score(X, labels, metric="cosine"))


def _centred_gram(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64)
    X = X - X.mean(0)
    K = X @ X.T
    return K / max(np.linalg.norm(K), 1e-300)


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items (widths may differ)."""
    return float(np.sum(_centred_gram(X) * _centred_gram(Y)))


def cka_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Linear CKA layer x layer: A (La, n, da), B (Lb, n, db) over the same items."""
    if A.shape[1] != B.shape[1]:
        raise ProbeError(f"CKA needs the same items on both sides: {A.shape[1]} vs {B.shape[1]} rows (token-level "
                         "comparison needs the same tokenizer; compare item by item instead)")
    ga = [_centred_gram(a) for a in A]
    gb = [_centred_gram(b) for b in B]
    return np.array([[float(np.sum(x * y)) for y in gb] for x in ga])


def resolve_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """`m` (from `submit_layer_metrics`) with every pending metric (a Future in a per-layer list)
    replaced by its result: waits for the workers."""
    return {k: [x.result() if isinstance(x, Future) else x for x in v] if isinstance(v, list) else v
            for k, v in m.items()}


def layer_metrics(states: States, items: Sequence[Item], folds: int = 5, seed: int = 0, probes: bool = True,
                  langs: tuple[str, str] = ("en", "ru"), jobs: int | None = None) -> dict[str, Any]:
    """Every per-layer metric of one model's pooled states, with chance levels beside them
    (computed in `jobs` worker processes, see `probe_pool`)."""
    with probe_pool(jobs) as pool:
        return resolve_metrics(submit_layer_metrics(states, items, folds, seed, probes, langs, pool))


def submit_layer_metrics(states: States, items: Sequence[Item], folds: int, seed: int, probes: bool,
                         langs: tuple[str, str], pool: Any) -> dict[str, Any]:
    """`layer_metrics` with every metric submitted to `pool` and not waited for: the entries are
    Futures until `resolve_metrics`. A caller probing several models submits them all to one pool
    first, so that no model's metrics wait for another's (`probe.probe_models`)."""
    items = list(items)
    if states.pooled.shape[1] != len(items):
        raise ProbeError(f"{states.pooled.shape[1]} state rows for {len(items)} items: pool per item (last or mean)")
    paired = [it for it in items if it.pair and it.lang in langs]
    if paired:
        check_translations(items, langs)
    labels = [it.label for it in items]
    lang = [it.lang for it in items]
    groups = [it.cv_group for it in items]
    held = np.array([it.heldout for it in items])
    subsets = {"heldout": held, "trained": ~held} if held.any() else {}
    anch = np.array([it.anchored for it in items])
    subsets.update({"anchored": anch, "unanchored": ~anch} if anch.any() else {})  # sentences sharing a Latin/digit string
    subsets = subsets or None
    has_labels = all(labels) and len(set(labels)) > 1
    two_langs = sorted({it.lang for it in items}) == sorted(langs)
    per: dict[str, list | None] = dict.fromkeys(("retrieval", "retrieval_raw", "retrieval_neutral", "probe_category",
                                                 "probe_language", "probe_language_neutral", "silhouette_category",
                                                 "silhouette_language"))  # the output's order; unused ones dropped
    if probes:
        check_folds(len(set(groups)), folds)
    L = len(states.layers)

    def tasks(k: int) -> list[tuple[str, int, Any, tuple]]:  # (metric, cost rank: 0 longest, function, arguments)
        X = np.asarray(states.pooled[k], dtype=np.float32)
        Xn = remove_language_directions(X, lang, "lda") if two_langs and (probes or paired) else None
        t: list[tuple[str, int, Any, tuple]] = []
        if probes:
            t.append(("probe_category", 0, probe_accuracy, (X, labels, groups, folds, seed)) if has_labels else
                     ("probe_category", 9, None, ()))
            t.append(("probe_language", 1, probe_accuracy, (X, lang, groups, folds, seed)))
            if two_langs:
                t.append(("probe_language_neutral", 1, probe_accuracy, (Xn.astype(np.float32), lang, groups, folds, seed)))
        if paired:
            t.append(("retrieval", 2, retrieval, (X, items, langs, True, subsets)))
            t.append(("retrieval_raw", 2, _short_retrieval, (X, items, langs, False)))
            if two_langs:
                t.append(("retrieval_neutral", 2, _short_retrieval, (Xn, items, langs, False, subsets)))
        t.append(("silhouette_category", 2, silhouette, (X, labels)) if has_labels else ("silhouette_category", 9, None, ()))
        t.append(("silhouette_language", 2, silhouette, (X, lang)))
        return t

    def submit(key: str, k: int, fn: Any, args: tuple) -> None:
        per[key] = per.get(key) or [None] * L
        per[key][k] = pool.submit(fn, *args) if fn is not None else None

    if states.pooled.nbytes > WINDOW_BYTES:  # large: layer by layer, at most workers + 1 layers' arguments held
        in_flight: list[list[Future]] = []
        for k in range(L):
            if len(in_flight) > pool._max_workers:
                wait(in_flight.pop(0))
            for key, _, fn, args in tasks(k):
                submit(key, k, fn, args)
            in_flight.append([v[k] for v in per.values() if v and isinstance(v[k], Future)])
    else:  # longest first (the category probes), so no long job is left to run alone at the end
        every = [(rank, k, key, fn, args) for k in range(L) for key, rank, fn, args in tasks(k)]
        for _, k, key, fn, args in sorted(every, key=lambda t: t[:2]):
            submit(key, k, fn, args)
    per = {k: v for k, v in per.items() if v}
    out: dict[str, Any] = {"layers": states.layers, "n_items": len(items), **per}
    if states.lens is not None:
        out["logit_lens"] = states.lens
    return out


def _short(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("n_")}


def _short_retrieval(*args) -> dict[str, Any]:
    return _short(retrieval(*args))


def curve(metrics: dict[str, Any], key: str, field: str) -> list[float | None]:
    """One number per layer from `layer_metrics` output (None where not available)."""
    vals = metrics.get(key) or []
    return [(v or {}).get(field) if isinstance(v, dict) else v for v in vals]
