"""Classifiers of :mod:`ogan_plugin.evaluate`: a pixel classifier, linear probes, and the
quality of samples in the classifier's eyes (confidence, classes present, Fréchet distance).

The classifiers need scikit-learn (``pip install 'ogan-plugin[demo]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ogan_plugin.evaluation.data import DataLike, collect, generate

__all__ = ["PixelClassifier", "SampleQuality", "frechet_distance", "linear_probe", "sample_quality"]

# --- classifiers ---------------------------------------------------------------------------
def _sklearn():
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the evaluation classifiers need scikit-learn: pip install 'ogan-plugin[demo]'") from exc
    return LogisticRegression, make_pipeline, StandardScaler


def _flat(x: Tensor) -> np.ndarray:
    return x.detach().float().reshape(x.shape[0], -1).cpu().numpy().astype(np.float64)


def _labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    return y


def _logistic(C: float, max_iter: int):
    LogisticRegression, make_pipeline, StandardScaler = _sklearn()
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


class PixelClassifier:
    """A logistic-regression classifier on standardized raw pixels (scikit-learn).

    Used to judge reconstructions and samples: it labels images, says how sure it is,
    and maps images to its K class logits, the feature space of
    :func:`sample_quality`'s Fréchet distance.

    Args:
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: solver iterations.
    """

    def __init__(self, C: float = 0.1, max_iter: int = 2000) -> None:
        self.model = _logistic(C, max_iter)
        self.classes: Optional[np.ndarray] = None

    def fit(self, images: DataLike, labels: Optional[Tensor] = None) -> "PixelClassifier":
        """Fit on images (N, ...) and integer labels (N,) (or labelled batches)."""
        x, y = collect(images) if labels is None else (images, labels)
        if y is None:
            raise ValueError("labels are needed to fit the classifier")
        if not isinstance(x, Tensor):
            raise TypeError(f"images must be a tensor, got {type(x).__name__}")
        yy = _labels(y, x.shape[0])
        if len(np.unique(yy)) < 2:
            raise ValueError("labels must contain at least two classes")
        self.model.fit(_flat(x), yy)
        self.classes = self.model.classes_
        return self

    def _ready(self) -> None:
        if self.classes is None:
            raise RuntimeError("call fit() before using the classifier")

    def predict(self, images: Tensor) -> Tensor:
        """Predicted labels (N,) int64."""
        self._ready()
        return torch.from_numpy(self.model.predict(_flat(images)).astype(np.int64))

    def predict_proba(self, images: Tensor) -> Tensor:
        """Class probabilities (N, K) float64 (columns in the order of ``classes``)."""
        self._ready()
        return torch.from_numpy(self.model.predict_proba(_flat(images)))

    def features(self, images: Tensor) -> Tensor:
        """The K class logits (N, K) float64: the classifier's feature space."""
        self._ready()
        f = self.model.decision_function(_flat(images))
        return torch.from_numpy(np.asarray(f, dtype=np.float64).reshape(images.shape[0], -1))

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of ``images`` labelled correctly."""
        pred = self.predict(images).numpy()
        return float((pred == _labels(labels, images.shape[0])).mean())


def linear_probe(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *, C: float = 1.0
) -> float:
    """Held-out accuracy of a logistic regression (standardized inputs) fit on features."""
    ytr = _labels(train_labels, train_features.shape[0], "train_labels")
    yte = _labels(test_labels, test_features.shape[0], "test_labels")
    model = _logistic(C, 2000)
    model.fit(_flat(train_features), ytr)
    return float((model.predict(_flat(test_features)) == yte).mean())


# --- samples -------------------------------------------------------------------------------
def frechet_distance(real_features: Tensor, fake_features: Tensor) -> float:
    """Fréchet distance between Gaussians fit to two feature sets (N, F) and (M, F):
    ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))``, computed in float64.

    ``tr((S_r S_f)^(1/2))`` is the sum of the square roots of the eigenvalues of
    ``S_r^(1/2) S_f S_r^(1/2)`` (symmetric, so this is stable).
    """
    a, b = _flat(real_features), _flat(fake_features)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("each feature set needs at least 2 rows for a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_root = float(np.sqrt(np.clip(cross, 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_root)
    return max(d, 0.0)


@dataclass
class SampleQuality:
    """How a classifier sees ``G(z)``.

    ``confidence``: mean top-class probability; ``classes_present``: classes predicted for
    at least ``min_share`` of the samples; ``class_counts``: samples per class (in the
    classifier's class order); ``frechet``: Fréchet distance between the reference images
    and the samples in the classifier's logit space.
    """

    confidence: float
    classes_present: int
    class_counts: list[int]
    frechet: float


def sample_quality(
    generator: Callable[[Tensor], Tensor],
    classifier: PixelClassifier,
    reference_images: DataLike,
    z_dim: int,
    n_samples: int = 1000,
    *,
    seed: int = 0,
    min_share: float = 0.01,
    batch_size: int = 256,
    y: Optional[Tensor] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> SampleQuality:
    """Judge ``n_samples`` samples ``G(z)`` (``G(z, y)`` with labels ``y``) with
    ``classifier`` against ``reference_images``.  ``z_shape``: the per-sample shape G
    takes its noise in, as in :func:`generate`."""
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share!r}")
    ref, _ = collect(reference_images)
    fake = generate(generator, z_dim, n_samples, seed=seed, batch_size=batch_size, y=y, z_shape=z_shape).cpu()
    if fake.shape[1:] != ref.shape[1:]:
        raise ValueError(f"the generator's images {tuple(fake.shape[1:])} differ from the data's {tuple(ref.shape[1:])}")
    proba = classifier.predict_proba(fake)
    counts = np.bincount(proba.argmax(1).numpy(), minlength=proba.shape[1])
    present = int((counts >= max(1, math.ceil(min_share * n_samples))).sum())
    fd = frechet_distance(classifier.features(ref.cpu()), classifier.features(fake))
    return SampleQuality(float(proba.max(1).values.mean()), present, [int(c) for c in counts], fd)
