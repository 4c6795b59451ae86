"""2-D maps of each layer's states (PCA, UMAP or AlignedUMAP), successive layers Procrustes-aligned
so the panels share an orientation."""

from __future__ import annotations

import warnings

import numpy as np

from bvvlab.analysis.activations import States
from bvvlab.analysis.items import ProbeError

# ============================================================================ figures


def coords_2d(X: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows of `X` (centred first) by "umap" (cosine, seeded) or "pca",
    scaled to a common range: one panel of a layer map."""
    X = np.asarray(X, np.float64)
    X = X - X.mean(0)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Y = umap.UMAP(n_components=2, n_neighbors=min(15, len(X) - 1), metric="cosine", random_state=seed,
                          n_jobs=1, init="pca" if len(X) > 3 else "random").fit_transform(X)
    elif method == "pca":  # the top two principal axes from the smaller of X'X and XX' (eigh: 10x an SVD's speed)
        n, d = X.shape
        w, V = np.linalg.eigh(X.T @ X if n >= d else X @ X.T)
        V = V[:, ::-1][:, :2]
        Y = X @ V if n >= d else V * np.sqrt(np.clip(w[::-1][:V.shape[1]], 0, None))
        if Y.shape[1] < 2:
            Y = np.pad(Y, ((0, 0), (0, 2 - Y.shape[1])))
    else:
        raise ProbeError(f"map method {method!r}: use 'umap' or 'pca'")
    return _scaled(Y)


def _procrustes(Y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Y rotated/reflected onto ref (orthogonal Procrustes): successive panels share an orientation."""
    U, _, Vt = np.linalg.svd(Y.T @ ref)
    return Y @ (U @ Vt)


MAP_METHODS = ("pca", "umap", "aligned-umap")


def _scaled(Y: np.ndarray) -> np.ndarray:
    Y = Y - Y.mean(0)
    return Y / max(float(np.abs(Y).max()), 1e-12)


def _aligned_umap(states: States, seed: int) -> list[np.ndarray]:
    """umap-learn's AlignedUMAP over the layers: the same items in every layer (identity relations),
    so each panel is fitted jointly with its neighbours and they share an orientation."""
    import umap

    Xs = [np.asarray(states.pooled[k], np.float64) for k in range(len(states.layers))]
    Xs = [X - X.mean(0) for X in Xs]
    n = len(Xs[0])
    if len(Xs) < 2:
        return [coords_2d(Xs[0], "umap", seed)]
    ident = {i: i for i in range(n)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = umap.AlignedUMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=seed,
                               init="random").fit(Xs, relations=[ident] * (len(Xs) - 1))
    return [_scaled(np.asarray(Y)) for Y in fit.embeddings_]


def layer_maps(states: States, method: str = "pca", seed: int = 0) -> list[np.ndarray]:
    """2-D coordinates per layer (in [-1, 1]): "pca" or "umap" per layer, each layer Procrustes-
    aligned to the one before it; "aligned-umap": umap-learn's AlignedUMAP over all layers."""
    if method not in MAP_METHODS:
        raise ProbeError(f"map method {method!r}: use one of {', '.join(MAP_METHODS)}")
    if method == "aligned-umap":
        return _aligned_umap(states, seed)
    maps: list[np.ndarray] = []
    for k in range(len(states.layers)):
        Y = coords_2d(states.pooled[k], method, seed)
        maps.append(_procrustes(Y, maps[-1]) if maps else Y)
    return maps
