"""Statistics that make the probing figures honest (issue 28): a stratified permutation null for
cross-lingual retrieval (random re-pairings of the translation pairs, shared across layers so the
maximum over layers gives a family-wise p-value), bootstrap intervals over concepts, a paired
bootstrap for model A minus model B, MRR / median rank / pair AUC, cosine and CSLS after
per-language centring, debiased linear CKA (the unbiased HSIC of Song et al. 2012, as used for
CKA by Nguyen, Raghu & Kornblith 2021) and cross-lingual RSA (a Mantel test), both with the same
permutation null.

Everything works on one (n x n) similarity matrix per layer between the paired items of the two
languages (row i and column i are the translations of pair i): the null re-pairs by gathering
precomputed ranks, so 1,000 permutations of 300 pairs cost a few milliseconds per layer.

Why stratified: with a glyph-disjoint clone or any tokenizer, a word's number of characters and
tokens shows in its states already at layer 0, so a plain permutation null is beaten by the
untrained model (issue 28, trap (b)). Re-pairing only among pairs of the same length profile
(`length_strata`) makes the null carry that confound too."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bvvlab.analysis.items import Item, ProbeError

RETRIEVAL_STATS = ("top1", "mrr", "median_rank", "auc")


# ============================================================================ pairs and strata


def paired_index(items: Sequence[Item], langs: tuple[str, str] = ("en", "ru")) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows of language a, rows of language b, pair ids): the first item of each pair id in each
    language, for the pairs present in both, in first-seen order."""
    a, b = langs
    first: dict[tuple[str, str], int] = {}
    order: list[str] = []
    for i, it in enumerate(items):
        if it.pair and it.lang in langs and (it.pair, it.lang) not in first:
            first[(it.pair, it.lang)] = i
            if it.pair not in order:
                order.append(it.pair)
    pairs = [p for p in order if (p, a) in first and (p, b) in first]
    return (np.array([first[(p, a)] for p in pairs], dtype=np.int64),
            np.array([first[(p, b)] for p in pairs], dtype=np.int64), pairs)


def length_strata(keys: Sequence[tuple], min_size: int = 8) -> np.ndarray:
    """Stratum id per pair from its length profile `keys` (e.g. (characters a, characters b,
    tokens a, tokens b)): pairs with equal keys share a stratum; strata smaller than `min_size`
    are merged with their neighbours in sorted key order, so every pair can be re-paired."""
    keys = [tuple(k) for k in keys]
    n = len(keys)
    order = sorted(range(n), key=lambda i: keys[i])
    out = np.zeros(n, dtype=np.int64)
    sid, size = 0, 0
    for j, i in enumerate(order):
        if j and keys[i] != keys[order[j - 1]] and size >= min_size:
            sid, size = sid + 1, 0
        out[i] = sid
        size += 1
    if n and size < min_size and sid > 0:  # a small last stratum joins the one before
        out[out == sid] = sid - 1
    return out


def permutations(n: int, n_perm: int, strata: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """(n_perm, n) random re-pairings, each a permutation within every stratum."""
    if n_perm < 1:
        raise ProbeError(f"a permutation null needs at least 1 permutation, got {n_perm}: give --permutations 1000 "
                         "(or more)")
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.argsort(rng.random((n_perm, n)), axis=1)
    strata = np.asarray(strata)
    out = np.empty((n_perm, n), dtype=np.int64)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        out[:, idx] = idx[np.argsort(rng.random((n_perm, len(idx))), axis=1)]
    return out


# ============================================================================ similarity


def centred_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarity after centring each language on its own mean (Libovický et al. 2020)."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    A = A - A.mean(0)
    B = B - B.mean(0)
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    B /= np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return A @ B.T


def csls(S: np.ndarray, k: int = 10) -> np.ndarray:
    """Cross-domain similarity local scaling (Conneau et al. 2018): 2 cos(x, y) - r(x) - r(y),
    r the mean similarity of a point's k nearest neighbours in the other language (hubs lose)."""
    k = max(1, min(k, S.shape[0] - 1, S.shape[1] - 1))
    ra = np.mean(-np.partition(-S, k - 1, axis=1)[:, :k], axis=1)
    rb = np.mean(-np.partition(-S, k - 1, axis=0)[:k], axis=0)
    return 2 * S - ra[:, None] - rb[None, :]


def rank_matrix(S: np.ndarray) -> np.ndarray:
    """R[i, j]: the rank (1 = best) column j would have as row i's translation; ties count against
    the true item (rank = the number of columns scoring at least as high, itself included). One
    batched search: row i is shifted by a multiple of the value range, so the flattened rows stay
    sorted and equal values stay equal."""
    S = np.asarray(S, np.float64)
    m, n = S.shape
    span = 2 * (np.abs(S).max() + 1)
    shift = (np.arange(m) * span)[:, None]
    srt = (np.sort(S, axis=1) + shift).ravel()
    below = np.searchsorted(srt, (S + shift).ravel(), side="left").reshape(m, n) - np.arange(m)[:, None] * n
    return (n - below).astype(np.int64)


# ============================================================================ retrieval with a null


def _stats(ranks: np.ndarray, n: int | np.ndarray) -> dict[str, np.ndarray]:
    """Per-set statistics of ranks (..., q): top-1, MRR, median rank, pair AUC (the share of wrong
    gallery items ranked below the true one; `n`: the gallery size, or one per query)."""
    r = ranks.astype(np.float64)
    return {"top1": (ranks == 1).mean(-1), "mrr": (1.0 / r).mean(-1), "median_rank": np.median(r, -1),
            "auc": ((n - r) / np.maximum(1, np.asarray(n) - 1)).mean(-1)}


def per_pair(S: np.ndarray, ranks: tuple[np.ndarray, np.ndarray] | None = None,
             sizes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-pair values, both directions averaged: reciprocal rank, top-1 hit, AUC, rank (`sizes`:
    each pair's gallery size, default all n)."""
    n = S.shape[0] if sizes is None else np.asarray(sizes, np.float64)
    Ra, Rb = ranks if ranks is not None else (rank_matrix(S), rank_matrix(S.T))
    ra = np.diag(Ra).astype(np.float64)
    rb = np.diag(Rb).astype(np.float64)
    return {"rr": (1 / ra + 1 / rb) / 2, "top1": ((ra == 1) * 1.0 + (rb == 1)) / 2,
            "auc": ((n - ra) + (n - rb)) / (2 * np.maximum(1, n - 1)), "rank": (ra + rb) / 2}


def gallery_mask(S: np.ndarray, galleries: np.ndarray | None) -> np.ndarray:
    """S with every cell between pairs of different galleries set below the lowest score, so a
    pair is ranked only among its own gallery (`Item.gallery`; concept sentences: their
    template). None or one gallery: S unchanged."""
    if galleries is None or len(set(galleries.tolist())) < 2:
        return S
    return np.where(galleries[:, None] == galleries[None, :], S, S.min() - 1.0)


def gallery_strata(galleries: np.ndarray | None, keys: Sequence[tuple] | None, min_size: int = 8) -> np.ndarray | None:
    """Strata for the null that never cross a gallery (a re-pairing across galleries would rank
    a masked cell): `length_strata` within each gallery, or the galleries alone without keys."""
    if galleries is None or len(set(galleries.tolist())) < 2:
        return length_strata(keys, min_size) if keys is not None else None
    out = np.zeros(len(galleries), dtype=np.int64)
    base = 0
    for g in sorted(set(galleries.tolist())):
        idx = np.flatnonzero(galleries == g)
        sub = length_strata([keys[i] for i in idx], min_size) if keys is not None else np.zeros(len(idx), np.int64)
        out[idx] = sub + base
        base += int(sub.max()) + 1
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 stat=np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over the rows of `values` (concepts resampled)."""
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
    boots = stat(v[idx], axis=1)
    a = (1 - level) / 2 * 100
    return float(np.percentile(boots, a)), float(np.percentile(boots, 100 - a))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Model A minus model B on the same concepts: the mean difference, its 95% percentile
    interval with the concepts resampled together, and a two-sided bootstrap p-value."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ProbeError(f"a paired comparison needs the same concepts on both sides: {a.shape} vs {b.shape}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    boots = d[idx].mean(1)
    p = 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))
    return {"diff": float(d.mean()), "low": float(np.percentile(boots, 2.5)), "high": float(np.percentile(boots, 97.5)),
            "p": float(min(1.0, max(p, 1 / (n_boot + 1)))), "n": int(len(d))}


def retrieval_null(sims: Sequence[np.ndarray], perms: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   sizes: np.ndarray | None = None) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """Per layer (one paired similarity matrix each), every retrieval statistic both ways with its
    permutation null (`null_mean`, `null_high` = 95th percentile, `p` per layer, `p_fwe` from the
    maximum over layers, the same re-pairings in every layer) and its bootstrap interval over
    pairs (`low`, `high`). Median rank: smaller is better (its null and p are mirrored). `sizes`:
    each pair's gallery size where the matrices are gallery-masked (`gallery_mask`; the
    re-pairings then stay within galleries, `gallery_strata`)."""
    P, n = perms.shape
    rows = np.arange(n)
    g = n if sizes is None else np.asarray(sizes, np.float64)
    obs, null, pps = [], [], []
    for S in sims:
        Ra, Rb = rank_matrix(S), rank_matrix(S.T)
        pps.append(per_pair(S, (Ra, Rb), sizes))
        o_ab, o_ba = _stats(Ra[rows, rows], g), _stats(Rb[rows, rows], g)
        n_ab = _stats(Ra[rows[None, :], perms], g)  # query a_i, its re-paired translation b_perm(i)
        n_ba = _stats(Rb[perms, rows[None, :]], g)  # query b_perm(i), its translation a_i (same gallery)
        obs.append({k: (o_ab[k] + o_ba[k]) / 2 for k in o_ab} | {f"{k}_a2b": o_ab[k] for k in o_ab}
                   | {f"{k}_b2a": o_ba[k] for k in o_ba})
        null.append({k: (n_ab[k] + n_ba[k]) / 2 for k in n_ab})
    out = []
    for li, (o, nl) in enumerate(zip(obs, null)):
        pp = pps[li]
        r: dict[str, Any] = {"n_pairs": n, "permutations": P}
        for k in RETRIEVAL_STATS:
            sign = -1.0 if k == "median_rank" else 1.0
            mx = np.max(np.stack([sign * x[k] for x in null]), axis=0)  # max over layers, per permutation
            lo, hi = (bootstrap_ci(pp["rank"], n_boot, seed, stat=np.median) if k == "median_rank" else
                      bootstrap_ci(pp[{"top1": "top1", "mrr": "rr", "auc": "auc"}[k]], n_boot, seed))
            r[k] = {"value": float(o[k]), "a2b": float(o[f"{k}_a2b"]), "b2a": float(o[f"{k}_b2a"]),
                    "null_mean": float(nl[k].mean()),
                    "null_high": float(np.percentile(nl[k], 5 if sign < 0 else 95)),
                    "p": float((1 + np.sum(sign * nl[k] >= sign * o[k] - 1e-12)) / (P + 1)),
                    "p_fwe": float((1 + np.sum(mx >= sign * o[k] - 1e-12)) / (P + 1)), "low": lo, "high": hi}
        out.append(r)
    return out, pps


# ============================================================================ CKA and RSA with a null


def _offdiag(K: np.ndarray) -> np.ndarray:
    K = np.array(K, np.float64)
    np.fill_diagonal(K, 0.0)
    return K


def _hsic_u(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC estimate of Song et al. 2012 (eq. 5); K and L with zeroed diagonals."""
    n = K.shape[0]
    kl = float(np.sum(K * L))
    ks, ls = K.sum(), L.sum()
    k1l1 = float(K.sum(0) @ L.sum(0))
    return (kl + ks * ls / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * k1l1) / (n * (n - 3))


def debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA of two representations of the same n items (n > 3): unbiased HSIC of
    the linear kernels, normalised (Nguyen, Raghu & Kornblith 2021, after Song et al. 2012).
    Near 0 for unrelated representations at any n / d, where the biased estimate is not."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    if X.shape[0] != Y.shape[0] or X.shape[0] < 4:
        raise ProbeError(f"debiased CKA needs the same n >= 4 items on both sides: {X.shape[0]} vs {Y.shape[0]}")
    K, L = _offdiag(X @ X.T), _offdiag(Y @ Y.T)
    den = np.sqrt(max(_hsic_u(K, K), 0.0) * max(_hsic_u(L, L), 0.0))
    return float(_hsic_u(K, L) / den) if den > 0 else 0.0


def _perm_dots(K: np.ndarray, L: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """sum(K * L[p][:, p]) for every permutation p: two contiguous gathers per permutation in
    float32 (a 3-d fancy index over all permutations at once is 5x slower)."""
    K32, L32 = np.ascontiguousarray(K, np.float32), np.ascontiguousarray(L, np.float32)
    out = np.empty(len(perms))
    for i, p in enumerate(perms):
        out[i] = float(np.vdot(K32, np.take(np.take(L32, p, axis=0), p, axis=1)))
    return out


def cka_null(A: np.ndarray, B: np.ndarray, perms: np.ndarray) -> dict[str, float]:
    """Cross-lingual debiased CKA between paired rows A (language a) and B (language b) with its
    permutation null: B's rows re-paired (row sums and totals are invariant under re-pairing, so
    only the trace term changes)."""
    K, L = _offdiag(A @ A.T), _offdiag(B @ B.T)
    n = K.shape[0]
    den = np.sqrt(max(_hsic_u(K, K), 0.0) * max(_hsic_u(L, L), 0.0))
    if den <= 0:
        return {"value": 0.0, "null_mean": 0.0, "null_high": 0.0, "p": 1.0}
    ks, ls = K.sum(), L.sum()
    k1, l1 = K.sum(0), L.sum(0)

    def cka(kl: np.ndarray, k1l1: np.ndarray) -> np.ndarray:
        return (kl + ks * ls / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * k1l1) / (n * (n - 3)) / den

    obs = float(cka(np.sum(K * L), k1 @ l1))
    nul = cka(_perm_dots(K, L, perms), l1[perms] @ k1)
    return {"value": obs, "null_mean": float(nul.mean()), "null_high": float(np.percentile(nul, 95)),
            "p": float((1 + np.sum(nul >= obs - 1e-12)) / (len(perms) + 1))}


def rsa_null(A: np.ndarray, B: np.ndarray, perms: np.ndarray) -> dict[str, float]:
    """Cross-lingual RSA: the Spearman correlation of the two languages' dissimilarity matrices
    (1 - cosine after centring, rows paired by concept), with a Mantel permutation null."""
    n = A.shape[0]
    iu = np.triu_indices(n, 1)

    def ranked(X):
        C = centred_cosine(X, X)
        R = np.zeros((n, n))
        r = np.empty(len(iu[0]))
        r[np.argsort(-C[iu], kind="stable")] = np.arange(1, len(r) + 1)  # ranks (ties: continuous data)
        R[iu] = r - r.mean()
        return R + R.T

    Ra, Rb = ranked(A), ranked(B)
    den = np.sqrt(np.sum(Ra[iu] ** 2) * np.sum(Rb[iu] ** 2))
    if den <= 0:
        return {"value": 0.0, "null_mean": 0.0, "null_high": 0.0, "p": 1.0}
    obs = float(np.sum(Ra * Rb) / 2 / den)
    nul = _perm_dots(Ra, Rb, perms) / 2 / den
    return {"value": obs, "null_mean": float(nul.mean()), "null_high": float(np.percentile(nul, 95)),
            "p": float((1 + np.sum(nul >= obs - 1e-12)) / (len(perms) + 1))}


# ============================================================================ one model, every layer


def pair_keys(items: Sequence[Item], ia: np.ndarray, ib: np.ndarray, token_counts: Sequence[int] | None = None,
              word_lengths: dict[int, tuple[int, int]] | None = None) -> list[tuple]:
    """Each pair's length profile for `length_strata`: (characters a, characters b, tokens a,
    tokens b); `word_lengths` (item row -> (characters, tokens) of the probed word) overrides the
    item text's own lengths (words in context: the word's, not the sentence's)."""
    def one(i: int) -> tuple[int, int]:
        if word_lengths and i in word_lengths:
            return word_lengths[i]
        return len(items[i].text), (token_counts[i] if token_counts is not None else 0)

    return [(one(a)[0], one(b)[0], one(a)[1], one(b)[1]) for a, b in zip(ia, ib)]


def layer_report(pooled: np.ndarray, items: Sequence[Item], n_perm: int = 1000, seed: int = 0,
                 langs: tuple[str, str] = ("en", "ru"), keys: Sequence[tuple] | None = None, min_stratum: int = 8,
                 n_boot: int = 1000, csls_k: int = 10, cka_perm: int | None = None) -> dict[str, Any]:
    """Retrieval (centred cosine and CSLS) with its stratified permutation null and bootstrap
    intervals, gain over layer 0 (paired bootstrap), cross-lingual debiased CKA and RSA with
    their nulls, for every layer of `pooled` (L, n_items, d). `keys`: each pair's length profile
    (`pair_keys`); None: no stratification. `cka_perm`: permutations for CKA/RSA (default
    min(n_perm, 200): they cost n^2 each). Items with `gallery` set are retrieved within their
    gallery only (CSLS's neighbourhoods stay global), and re-paired within it."""
    ia, ib, pairs = paired_index(items, langs)
    n = len(pairs)
    if n < 4:
        raise ProbeError(f"{n} translation pair(s) of {langs[0]} and {langs[1]}: the statistics need at least 4 "
                         "(give items of both languages with the same pair id)")
    gal = np.array([items[i].gallery for i in ia])
    strata = gallery_strata(gal, keys, min_stratum)
    sizes = (gal[:, None] == gal[None, :]).sum(1) if len(set(gal.tolist())) > 1 else None
    perms = permutations(n, n_perm, strata, seed)
    cperms = perms[:min(n_perm, 200) if cka_perm is None else max(1, cka_perm)]
    sims = [centred_cosine(np.asarray(pooled[k])[ia], np.asarray(pooled[k])[ib]) for k in range(pooled.shape[0])]
    cos, per = retrieval_null([gallery_mask(S, gal) for S in sims], perms, n_boot, seed, sizes)
    cs, _ = retrieval_null([gallery_mask(csls(S, csls_k), gal) for S in sims], perms, n_boot, seed, sizes)
    layers = []
    for k in range(pooled.shape[0]):
        X = np.asarray(pooled[k], np.float64)
        A = X[ia] - X[ia].mean(0)
        B = X[ib] - X[ib].mean(0)
        layers.append({"cosine": cos[k], "csls": cs[k],
                       "gain_mrr_vs_layer0": paired_bootstrap(per[k]["rr"], per[0]["rr"], n_boot, seed),
                       "cka": cka_null(A, B, cperms), "rsa": rsa_null(A, B, cperms)})
    counts = np.bincount(strata) if strata is not None else np.array([n])
    return {"n_pairs": n, "pairs": pairs, "galleries": len(set(gal.tolist())), "permutations": int(n_perm), "cka_permutations": int(len(cperms)),
            "strata": {"count": int(len(counts)), "min_size": int(counts.min()), "median_size": float(np.median(counts))},
            "layers": layers, "per_pair_rr": [p["rr"].round(6).tolist() for p in per]}


def compare(report_a: dict[str, Any], report_b: dict[str, Any], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Model A minus model B per layer (paired bootstrap over the pairs both reports share): the
    difference of mean reciprocal rank (both directions averaged), its interval and p."""
    common = [p for p in report_a["pairs"] if p in set(report_b["pairs"])]
    if len(common) < 4:
        raise ProbeError("the two reports share fewer than 4 translation pairs: compare models on the same items")
    ia = [report_a["pairs"].index(p) for p in common]
    ib = [report_b["pairs"].index(p) for p in common]
    L = min(len(report_a["per_pair_rr"]), len(report_b["per_pair_rr"]))
    return [paired_bootstrap(np.asarray(report_a["per_pair_rr"][k])[ia], np.asarray(report_b["per_pair_rr"][k])[ib],
                             n_boot, seed) for k in range(L)]
