"""Probes that transfer, and their control tasks (issue 28).

A category probe trained on English states and tested on Russian ones cannot lean on word
endings (the scripts share no glyph): it works only where the categories are encoded the same
way in both languages. Beside it, Hewitt & Liang's (2019) control task: every word type (concept)
gets a random label drawn from the real label distribution, fixed across its languages; the
probe's *selectivity* (real accuracy minus control accuracy) is reported, not its accuracy, so a
probe that memorises word types does not pass for one that reads meaning."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from bvvlab.analysis.items import Item, ProbeError


def _fit_predict(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, seed: int, max_iter: int = 200) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(set(ytr.tolist())) < 2:
        return np.full(len(Xte), ytr[0])
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sc = StandardScaler().fit(Xtr)
        clf = LogisticRegression(max_iter=max_iter, tol=1e-3, random_state=seed).fit(sc.transform(Xtr), ytr)
        return clf.predict(sc.transform(Xte))


def control_labels(groups: Sequence[str], labels: Sequence[str], seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: one random label per word type (`groups`: the concept),
    drawn from the empirical distribution of the real labels, the same in every language."""
    groups = list(groups)
    types = sorted(set(groups))
    rng = np.random.default_rng(seed)
    real = np.asarray(labels)
    pick = dict(zip(types, rng.choice(real, len(types), replace=True)))
    return np.array([pick[g] for g in groups])


def transfer_probe(X: np.ndarray, items: Sequence[Item], train_lang: str = "en", test_lang: str = "ru",
                   seed: int = 0) -> dict[str, Any]:
    """Category probe fitted on `train_lang` states and tested on the `test_lang` states (the same
    concepts in the other script: the transfer is the point), beside the control task's transfer
    and the majority baseline. Selectivity = real minus control accuracy."""
    lab = np.array([it.label for it in items])
    lang = np.array([it.lang for it in items])
    tr, te = lang == train_lang, lang == test_lang
    if not tr.any() or not te.any():
        raise ProbeError(f"a transfer probe needs items of both {train_lang} and {test_lang}")
    if len(set(lab[tr].tolist())) < 2:
        return {"available": False, "reason": "one category only"}
    ctrl = control_labels([it.cv_group for it in items], lab, seed)
    X = np.asarray(X, np.float32)
    acc = float(np.mean(_fit_predict(X[tr], lab[tr], X[te], seed) == lab[te]))
    cacc = float(np.mean(_fit_predict(X[tr], ctrl[tr], X[te], seed) == ctrl[te]))
    vals, counts = np.unique(lab[tr], return_counts=True)
    return {"available": True, "accuracy": acc, "control_accuracy": cacc, "selectivity": acc - cacc,
            "chance": float(np.mean(lab[te] == vals[np.argmax(counts)])), "n_train": int(tr.sum()),
            "n_test": int(te.sum())}


def selectivity_cv(X: np.ndarray, items: Sequence[Item], folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Within-language category probe (GroupKFold over concepts) and its control task: accuracy,
    control accuracy and selectivity."""
    from sklearn.model_selection import GroupKFold

    lab = np.array([it.label for it in items])
    groups = np.array([it.cv_group for it in items])
    ctrl = control_labels(groups, lab, seed)
    if len(set(groups.tolist())) < folds:
        raise ProbeError(f"{len(set(groups.tolist()))} concepts but {folds} folds: give more concepts or fewer folds")
    X = np.asarray(X, np.float32)
    hit = chit = 0
    for tr, te in GroupKFold(n_splits=folds).split(X, lab, groups):
        hit += int(np.sum(_fit_predict(X[tr], lab[tr], X[te], seed) == lab[te]))
        chit += int(np.sum(_fit_predict(X[tr], ctrl[tr], X[te], seed) == ctrl[te]))
    return {"accuracy": hit / len(lab), "control_accuracy": chit / len(lab), "selectivity": (hit - chit) / len(lab)}
