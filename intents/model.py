"""A linear model over string features: trained with scikit-learn, applied with a dictionary and numpy.

Training is logistic regression by averaged SGD, one-vs-rest (scikit-learn's SGDClassifier). Left out
one brand file at a time it scored 0.93 macro-F1 on the shipped corpus against 0.82-0.90 for L-BFGS
logistic regression, and fits in 0.2 s instead of 1-7 s.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("intents.model")

# Bump when features or training change: cached models of other versions are ignored.
VERSION = "6"
# Cached model versions kept on disk.
KEEP_CACHED = 6


@dataclass
class LinearModel:
    """One-vs-rest logistic regression: feature -> row of weights, one column per label."""

    labels: tuple[str, ...]
    index: dict[str, int]
    weights: np.ndarray  # (features, labels), float32
    bias: np.ndarray  # (labels,)

    def rows(self, features: Sequence[str]) -> list[int]:
        """The known features' rows, each once."""
        found = set(map(self.index.get, features))
        found.discard(None)
        return list(found)  # type: ignore[arg-type]

    def probabilities(self, rows: list[int], count: int, fixed: Sequence[int] = ()) -> list[float]:
        """Label probabilities: `rows` of `count` text features (scaled to unit length), `fixed` at 1."""
        scores = self.bias
        if rows:
            scores = scores + self.weights[rows].sum(axis=0) * (1.0 / math.sqrt(max(count, 1)))
        extra = [f for f in fixed if f not in rows]
        if extra:
            scores = scores + self.weights[extra].sum(axis=0)
        # Each label's own sigmoid, normalised over the labels (as scikit-learn's predict_proba).
        odds = [1.0 / (1.0 + math.exp(-x)) if x > -700.0 else 0.0 for x in scores.tolist()]
        total = sum(odds)
        return [o / total for o in odds]

    def strongest(self, rows: list[int], label: str, top: int = 5) -> list[tuple[str, float]]:
        """The features that pushed hardest towards `label` (feature, weight), strongest first."""
        if not rows:
            return []
        col = self.labels.index(label)
        names = self.names
        weights = self.weights[rows]
        lift = weights[:, col] - weights.mean(axis=1)
        best = np.argsort(-lift)[:top]
        return [(names[rows[i]], float(lift[i])) for i in best if lift[i] > 0]

    @functools.cached_property
    def names(self) -> list[str]:
        """Feature names by row."""
        names = [""] * len(self.index)
        for name, row in self.index.items():
            names[row] = name
        return names


def train(rows: Sequence[tuple[Sequence[str], Sequence[str]]], labels: Sequence[str],
          all_labels: Sequence[str], alpha: float = 3e-6) -> LinearModel:
    """Fit on (text features, fixed features) per message: text ones scaled to unit length, fixed at 1."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import SGDClassifier

    index: dict[str, int] = {}
    indptr, indices, data = [0], list[int](), list[float]()
    for feats, fixed in rows:
        cols = {index.setdefault(f, len(index)) for f in feats}
        fixed_cols = {index.setdefault(f, len(index)) for f in fixed} - cols
        indices.extend(cols)
        data.extend([1.0 / np.sqrt(max(len(feats), 1))] * len(cols))
        indices.extend(fixed_cols)
        data.extend([1.0] * len(fixed_cols))
        indptr.append(len(indices))
    matrix = csr_matrix((data, indices, indptr), shape=(len(rows), len(index)), dtype=np.float64)
    present = [lab for lab in all_labels if lab in set(labels)]
    fit = SGDClassifier(loss="log_loss", alpha=alpha, average=True, max_iter=30, tol=None, random_state=0)
    fit.fit(matrix, list(labels))
    order = [list(fit.classes_).index(lab) for lab in present]
    weights = fit.coef_[order].T.astype(np.float32)
    bias = fit.intercept_[order].astype(np.float32)
    return LinearModel(tuple(present), index, np.ascontiguousarray(weights), bias)


def cache_dir() -> Path:
    """Where trained models are kept between runs (WECOM_BOT_CACHE, else the user's cache folder)."""
    base = os.environ.get("WECOM_BOT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "wecom-bot")
    return Path(base)


def cache_key(*parts: str) -> str:
    """A short hash of everything the model depends on."""
    return hashlib.sha256("\0".join((VERSION, *parts)).encode()).hexdigest()[:24]


def load_cached(key: str) -> LinearModel | None:
    """The model saved under `key`, or None (missing or unreadable caches are simply retrained)."""
    path = cache_dir() / f"intents-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            names = saved["names"].tolist()
            labels = tuple(saved["labels"].tolist())
            weights, bias = saved["weights"], saved["bias"]
        if weights.shape != (len(names), len(labels)) or bias.shape != (len(labels),):
            raise ValueError("shapes do not agree")
        return LinearModel(labels, {n: i for i, n in enumerate(names)}, weights, bias)
    except Exception as exc:  # noqa: BLE001 - any unreadable cache only costs a retrain
        if path.exists():
            log.warning("intent model cache %s unreadable (%s): retraining", path, exc)
        return None


def save_cached(key: str, model: LinearModel) -> None:
    """Save a model under `key`; a cache that cannot be written only costs a retrain next time."""
    folder = cache_dir()
    names = model.names
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, names=np.array(names), labels=np.array(model.labels), weights=model.weights,
                     bias=model.bias)
        os.replace(tmp.name, folder / f"intents-{key}.npz")
        # Keep the newest few versions: every edit of an examples file makes a new one.
        for old in sorted(folder.glob("intents-*.npz"), key=lambda f: f.stat().st_mtime)[:-KEEP_CACHED]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("intent model cache not written to %s: %s", folder, exc)
