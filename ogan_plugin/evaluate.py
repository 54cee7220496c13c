"""How good is the encoder?  Metrics for a generator and its O-GAN discriminator.

Every function takes the modules and the data (tensors, or any iterable of tensors /
``(images, labels)`` pairs such as a ``DataLoader``), so they work on your own G, wrapped
D and data, not only inside ``ogan-plugin demo``.  Modules are put in eval mode while
measured and restored afterwards; nothing is trained except the small scikit-learn
classifiers the metrics use.

- :func:`mean_correlation`: mean Pearson rho(z, E(G(z))) on fresh noise.
- :func:`reconstruction_error`: MSE of ``G(scale * encode(x))`` against ``x``, next to the
  MSE of predicting the mean image for every input (the scale of "no information").
- :class:`PixelClassifier` (a logistic regression on raw pixels) and
  :func:`class_agreement`: how often it gives a reconstruction the label it gives the
  source image.
- :func:`linear_probe` / :func:`probe_codes_and_pixels`: held-out accuracy of a logistic
  regression on the codes against the same probe on raw pixels.
- :func:`sample_quality`: classifier confidence on samples, classes present, and the
  Fréchet distance (:func:`frechet_distance`) between real and generated images in the
  classifier's feature space (its K class logits).
- :func:`evaluate`: all of the above in one :class:`EncoderReport`.
- :func:`steps_to_quality`: how many fewer inversion steps (:func:`ogan_plugin.invert`)
  the encoder's start needs than a random or mean start to reach the same loss.

Class-conditional GANs: the functions that run the networks on data take
``conditional=True`` (the data's labels go to ``D(x, y)`` and ``G(z, y)``), those that
sample fresh noise take ``y=`` (the labels to generate with); :func:`evaluate` draws the
sample labels from the training labels.

The classifiers need scikit-learn (``pip install 'ogan-plugin[demo]'``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_int, check_number
from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.labels import check_conditional, label_args
from ogan_plugin.networks import device_dtype, eval_mode
from ogan_plugin.reconstruction import DEFAULT_LR, invert, reconstruct_checked

__all__ = [
    "DataLike",
    "EncoderReport",
    "PixelClassifier",
    "ProbeAccuracy",
    "ReconstructionError",
    "SampleQuality",
    "QualityMatch",
    "StepsToQuality",
    "class_agreement",
    "collect",
    "evaluate",
    "frechet_distance",
    "generate",
    "linear_probe",
    "mean_correlation",
    "probe_codes_and_pixels",
    "reconstruct_batched",
    "reconstruction_error",
    "sample_quality",
    "steps_to_quality",
]

#: a tensor of images (N, ...), or an iterable of image tensors or (images, labels) pairs
DataLike = Union[Tensor, Iterable[Any]]


# --- plumbing ----------------------------------------------------------------------------
def collect(data: DataLike, limit: Optional[int] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Concatenate ``data`` into ``(images, labels)`` (labels None when absent).

    ``data`` is a tensor, a ``(images, labels)`` tuple of tensors, or an iterable (e.g. a
    ``DataLoader``) yielding tensors or ``(images, labels, ...)`` tuples/lists.  At most
    ``limit`` images are kept.
    """
    if isinstance(data, Tensor):
        x = data if limit is None else data[:limit]
        return x, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"images and labels differ in length: {x.shape[0]} and {y.shape[0]}")
        return (x, y) if limit is None else (x[:limit], y[:limit])
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a tensor or an iterable of batches, got {type(data).__name__}")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    n = 0
    for batch in data:
        if isinstance(batch, Tensor):
            bx, by = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            bx = batch[0]
            by = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        else:
            raise TypeError(
                f"each batch must be a tensor or an (images, labels) pair, got {type(batch).__name__}"
            )
        if ys and by is None or (xs and not ys and by is not None):
            raise ValueError("some batches have labels and some do not")
        xs.append(bx)
        if by is not None:
            ys.append(by)
        n += bx.shape[0]
        if limit is not None and n >= limit:
            break
    if not xs:
        raise ValueError("data is empty: no batches")
    x = torch.cat(xs)
    y = torch.cat(ys) if ys else None
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return x, y


def _batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


def _labelled_batches(x: Tensor, y: Optional[Tensor], batch_size: int) -> Iterator[tuple[Tensor, tuple]]:
    """``(images, label_args)`` per batch: ``label_args`` is ``()`` or ``(labels,)``."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], label_args(None if y is None else y[i : i + batch_size])


def _require_labels(y: Optional[Tensor], name: str) -> None:
    if y is None:
        raise ValueError(
            f"conditional=True needs labelled {name}: (images, labels) pairs or a loader of them, "
            "so the labels can reach D(x, y) and G(z, y)"
        )


def _data(data: DataLike, conditional: bool, name: str = "images") -> tuple[Tensor, Optional[Tensor]]:
    """``collect(data)``; with ``conditional`` the labels are required (else dropped)."""
    x, y = collect(data)
    if conditional:
        _require_labels(y, name)
    return x, (y if conditional else None)


def _draw_labels(y: Tensor, n: int, seed: int) -> Tensor:
    """``n`` labels drawn with replacement from ``y`` (seeded CPU RNG): the class mix of ``y``."""
    return y.cpu()[torch.randint(len(y), (n,), generator=torch.Generator().manual_seed(seed))]


def _noise(n: int, z_dim: int, seed: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, z_dim, generator=g).to(device=device, dtype=dtype)


@torch.no_grad()
def generate(
    generator: Callable[..., Tensor],
    z_dim: int,
    n_samples: int = 1000,
    *,
    seed: int = 0,
    batch_size: int = 256,
    y: Optional[Tensor] = None,
) -> Tensor:
    """``n_samples`` images ``G(z)``, z ~ N(0, I) drawn from ``seed`` (CPU RNG, so the
    same on every device), in eval mode; returned on the generator's device.  With labels
    ``y`` (``n_samples`` of them): ``G(z, y)``."""
    check_int("z_dim", z_dim, 1)
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    check_conditional(generator, None, y, n_samples)
    device, dtype = device_dtype(generator)
    z = _noise(n_samples, z_dim, seed, device, dtype)
    y = None if y is None else y.to(device)
    with eval_mode(generator):
        return torch.cat([generator(b, *labels).float() for b, labels in _labelled_batches(z, y, batch_size)])


# --- the encoder inverts the generator ---------------------------------------------------
@torch.no_grad()
def mean_correlation(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    n_samples: int = 1000,
    *,
    seed: int = 0,
    batch_size: int = 256,
    y: Optional[Tensor] = None,
) -> float:
    """Mean over fresh ``z ~ N(0, I)`` of the Pearson correlation rho(z, E(G(z))).

    1 means the encoder recovers the noise up to the shift and scale the correlation
    ignores.  Both modules run in eval mode.  With labels ``y`` (``n_samples`` of them,
    conditional GANs): rho(z, E(G(z, y), y)).
    """
    from ogan_plugin.correlation import pearson_correlation

    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    check_conditional(generator, d, y, n_samples)
    device, dtype = device_dtype(generator, d)
    z = _noise(n_samples, d.z_dim, seed, device, dtype)
    y = None if y is None else y.to(device)
    rhos = []
    with eval_mode(generator, d):
        for zb, labels in _labelled_batches(z, y, batch_size):
            e = d.raw_outputs(generator(zb, *labels), *labels)[0]
            rhos.append(pearson_correlation(zb.float(), e.float()))
    return float(torch.cat(rhos).double().mean())


@torch.no_grad()
def reconstruct_batched(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    scale: float = 0.9,
    batch_size: int = 256,
    conditional: bool = False,
) -> Tensor:
    """``G(scale * encode(x))`` for every image (eval mode, in batches), as float32 on
    the images' device.  ``conditional``: the data's labels go to both networks,
    ``G(scale * encode(x, y), y)``."""
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_number("scale", scale, positive=True)
    check_int("batch_size", batch_size, 1)
    x, y = _data(images, conditional)
    check_conditional(generator, d, y, x.shape[0])
    device, dtype = device_dtype(d, generator)
    out = []
    with eval_mode(generator, d):
        for b, labels in _labelled_batches(x, y, batch_size):
            yb = labels[0].to(device) if labels else None
            out.append(reconstruct_checked(generator, d, b.to(device=device, dtype=dtype), scale, yb).float())
    return torch.cat(out).to(x.device)


class ReconstructionError(NamedTuple):
    """``mse``: mean squared pixel error of the reconstructions; ``mean_image_mse``: the
    same error when every image is "reconstructed" as the mean image (no information)."""

    mse: float
    mean_image_mse: float


@torch.no_grad()
def reconstruction_error(
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    mean_image: Optional[Tensor] = None,
    scale: float = 0.9,
    batch_size: int = 256,
    conditional: bool = False,
) -> ReconstructionError:
    """Pixel MSE of ``G(scale * encode(x))`` against ``x``, and of the mean image.

    ``mean_image`` (C, H, W) is the "know nothing" prediction; pass the training set's
    mean (default: the mean of ``images`` themselves).  ``conditional``: the data's
    labels go to both networks.
    """
    x, y = _data(images, conditional)
    x = x.float()
    rec = reconstruct_batched(
        generator, wrapped_discriminator, x if y is None else (x, y), scale=scale, batch_size=batch_size,
        conditional=conditional,
    )
    if rec.shape != x.shape:
        raise ValueError(f"the generator's images {tuple(rec.shape[1:])} differ from the data's {tuple(x.shape[1:])}")
    m = x.mean(0) if mean_image is None else mean_image.to(x).reshape(x.shape[1:])
    return ReconstructionError(float((rec - x).pow(2).mean()), float((m.expand_as(x) - x).pow(2).mean()))


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


def class_agreement(
    classifier: PixelClassifier,
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    scale: float = 0.9,
    batch_size: int = 256,
    conditional: bool = False,
) -> float:
    """Fraction of ``images`` whose reconstruction ``G(scale * encode(x))`` gets the same
    label from ``classifier`` as ``x`` itself (``conditional``: the data's labels go to
    both networks)."""
    x, y = _data(images, conditional)
    rec = reconstruct_batched(
        generator, wrapped_discriminator, x if y is None else (x, y), scale=scale, batch_size=batch_size,
        conditional=conditional,
    )
    return float((classifier.predict(rec) == classifier.predict(x)).double().mean())


# --- linear probes -------------------------------------------------------------------------
def linear_probe(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *, C: float = 1.0
) -> float:
    """Held-out accuracy of a logistic regression (standardized inputs) fit on features."""
    ytr = _labels(train_labels, train_features.shape[0], "train_labels")
    yte = _labels(test_labels, test_features.shape[0], "test_labels")
    model = _logistic(C, 2000)
    model.fit(_flat(train_features), ytr)
    return float((model.predict(_flat(test_features)) == yte).mean())


class ProbeAccuracy(NamedTuple):
    """Held-out accuracy of the same linear probe on the codes and on raw pixels."""

    code: float
    pixels: float


@torch.no_grad()
def encode_batched(
    wrapped_discriminator: OGANDiscriminator, images: DataLike, *, batch_size: int = 256, conditional: bool = False
) -> Tensor:
    """The standardized codes ``encode(x)`` (N, z_dim) float32 on CPU (eval mode);
    ``conditional``: ``encode(x, y)`` with the data's labels."""
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    x, y = _data(images, conditional)
    check_conditional(None, d, y, x.shape[0])
    device, dtype = device_dtype(d)
    with eval_mode(d):
        return torch.cat([
            d.encode(b.to(device=device, dtype=dtype), *(t.to(device) for t in labels)).float().cpu()
            for b, labels in _labelled_batches(x, y, batch_size)
        ])


def probe_codes_and_pixels(
    wrapped_discriminator: OGANDiscriminator,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    C: float = 1.0,
    batch_size: int = 256,
    conditional: bool = False,
) -> ProbeAccuracy:
    """:func:`linear_probe` on the codes ``encode(x)`` and on the raw pixels
    (``conditional``: the codes are ``encode(x, labels)``, as a conditional D needs)."""
    train = (train_images, train_labels) if conditional else train_images
    test = (test_images, test_labels) if conditional else test_images
    ctr = encode_batched(wrapped_discriminator, train, batch_size=batch_size, conditional=conditional)
    cte = encode_batched(wrapped_discriminator, test, batch_size=batch_size, conditional=conditional)
    return ProbeAccuracy(
        linear_probe(ctr, train_labels, cte, test_labels, C=C),
        linear_probe(train_images, train_labels, test_images, test_labels, C=C),
    )


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
) -> SampleQuality:
    """Judge ``n_samples`` samples ``G(z)`` (``G(z, y)`` with labels ``y``) with
    ``classifier`` against ``reference_images``."""
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share!r}")
    ref, _ = collect(reference_images)
    fake = generate(generator, z_dim, n_samples, seed=seed, batch_size=batch_size, y=y).cpu()
    if fake.shape[1:] != ref.shape[1:]:
        raise ValueError(f"the generator's images {tuple(fake.shape[1:])} differ from the data's {tuple(ref.shape[1:])}")
    proba = classifier.predict_proba(fake)
    counts = np.bincount(proba.argmax(1).numpy(), minlength=proba.shape[1])
    present = int((counts >= max(1, math.ceil(min_share * n_samples))).sum())
    fd = frechet_distance(classifier.features(ref.cpu()), classifier.features(fake))
    return SampleQuality(float(proba.max(1).values.mean()), present, [int(c) for c in counts], fd)


# --- everything at once --------------------------------------------------------------------
@dataclass
class EncoderReport:
    """All encoder metrics of :func:`evaluate` (label-based fields are None without labels).

    ``frechet_reference`` is the Fréchet distance between the held-out and the training
    images themselves: the floor that real data reaches with this many images.
    """

    mean_rho: float
    reconstruction_mse: float
    mean_image_mse: float
    class_agreement: Optional[float] = None
    reconstruction_accuracy: Optional[float] = None
    classifier_accuracy: Optional[float] = None
    probe_code_accuracy: Optional[float] = None
    probe_pixel_accuracy: Optional[float] = None
    sample_confidence: Optional[float] = None
    sample_classes_present: Optional[int] = None
    sample_class_counts: Optional[list[int]] = None
    frechet: Optional[float] = None
    frechet_reference: Optional[float] = None
    n_classes: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``extra`` merged in at the top level)."""
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


def evaluate(
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    train: DataLike,
    test: DataLike,
    *,
    n_samples: int = 1000,
    scale: float = 0.9,
    seed: int = 0,
    classifier: Optional[PixelClassifier] = None,
    batch_size: int = 256,
    conditional: bool = False,
) -> EncoderReport:
    """Every metric of this module for ``generator`` and its encoder.

    Args:
        train: the training images (with labels for the class-based metrics): the mean
            image, the classifier and the probes are fit on them.
        test: held-out images (with labels), never trained on: reconstructions, class
            agreement and probe accuracy are measured on them.
        n_samples: fresh noise vectors for the correlation and the sample metrics.
        scale: reconstruction factor on the standardized code.
        classifier: a fitted :class:`PixelClassifier` to reuse (default: fit one on
            ``train``).
        conditional: a class-conditional GAN: ``train`` and ``test`` must carry labels,
            which go to ``D(x, y)`` and ``G(z, y)`` for reconstructions and codes; fresh
            samples get labels drawn (seeded) from the training labels.

    Raises:
        ValueError: ``conditional`` without labelled data, or labels the networks do
            not take.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    xtr, ytr = collect(train)
    xte, yte = collect(test)
    xtr, xte = xtr.float().cpu(), xte.float().cpu()
    if conditional:
        _require_labels(ytr, "train data")
        _require_labels(yte, "test data")
        check_conditional(generator, d, ytr, xtr.shape[0], "train labels")
    sample_y = _draw_labels(ytr, n_samples, seed) if conditional else None
    test_data = (xte, yte) if conditional else xte
    rec = reconstruction_error(
        generator, d, test_data, mean_image=xtr.mean(0), scale=scale, batch_size=batch_size, conditional=conditional
    )
    report = EncoderReport(
        mean_rho=mean_correlation(generator, d, n_samples, seed=seed, batch_size=batch_size, y=sample_y),
        reconstruction_mse=rec.mse,
        mean_image_mse=rec.mean_image_mse,
    )
    if ytr is None or yte is None:
        return report
    clf = classifier if classifier is not None else PixelClassifier().fit(xtr, ytr)
    recs = reconstruct_batched(generator, d, test_data, scale=scale, batch_size=batch_size, conditional=conditional)
    pred_src, pred_rec = clf.predict(xte), clf.predict(recs)
    report.class_agreement = float((pred_src == pred_rec).double().mean())
    report.reconstruction_accuracy = float((pred_rec == yte.cpu()).double().mean())
    report.classifier_accuracy = float((pred_src == yte.cpu()).double().mean())
    probe = probe_codes_and_pixels(d, xtr, ytr, xte, yte, batch_size=batch_size, conditional=conditional)
    report.probe_code_accuracy, report.probe_pixel_accuracy = probe.code, probe.pixels
    sample_y = _draw_labels(ytr, n_samples, seed + 1) if conditional else None
    sq = sample_quality(generator, clf, xtr, d.z_dim, n_samples, seed=seed + 1, batch_size=batch_size, y=sample_y)
    report.sample_confidence = sq.confidence
    report.sample_classes_present = sq.classes_present
    report.sample_class_counts = sq.class_counts
    report.frechet = sq.frechet
    report.frechet_reference = frechet_distance(clf.features(xtr), clf.features(xte))
    report.n_classes = len(clf.classes) if clf.classes is not None else None
    return report


# --- inversion: steps to quality -----------------------------------------------------------
class QualityMatch(NamedTuple):
    """The encoder start against the best baseline start cut at ``steps`` steps.

    ``target``: the lowest mean loss a baseline start reached in ``steps`` steps, by
    ``baseline``; ``encoder_steps``: the first step at which the encoder start's mean loss
    is ``<= target`` (None: not within its run); ``ratio``: ``steps / encoder_steps``
    (``inf`` when the encoder's start alone is as good); ``seconds``: the baseline's wall
    time for its ``steps``; ``encoder_seconds``: the encoder start's to ``encoder_steps``
    (encoding included); ``time_ratio``: ``seconds / encoder_seconds``.

    This is the package's one definition of the time ratio.  The times come from the
    clock given to :meth:`StepsToQuality.at`: by default the per-step times
    :func:`steps_to_quality` measured in its own runs (:attr:`StepsToQuality.times`);
    ``ogan-plugin bench --invert`` passes the costs of interleaved runs instead
    (:func:`ogan_plugin.bench.invert.interleaved_costs`: time to start plus time per step,
    medians over rounds that run every start in turn), which a change of the machine's
    load between runs minutes apart skews less (docs/inversion.md).
    """

    steps: int
    target: float
    baseline: str
    encoder_steps: Optional[int]
    ratio: Optional[float]
    seconds: float
    encoder_seconds: Optional[float]
    time_ratio: Optional[float]


#: a clock for :meth:`StepsToQuality.at`: ``clock(start, steps)`` -> seconds that ``steps``
#: steps from ``start`` take
Clock = Callable[[str, int], float]


@dataclass
class StepsToQuality:
    """What :func:`steps_to_quality` measured: every start's loss and wall time after each step.

    Attributes:
        budget: the steps every start ran.
        curves: per start (``"encoder"`` and the baselines), the mean loss over the images
            of their best codes so far after each step (``budget + 1`` values; index 0 is
            the start).
        times: per start, the wall time in seconds at which each of those values was known
            (time spent in the caller's ``callback`` excluded).
        match: :meth:`at` the full budget, timed by :attr:`times`: the goal's figures.
    """

    budget: int
    curves: dict[str, list[float]]
    times: dict[str, list[float]]
    match: QualityMatch = field(init=False)

    def __post_init__(self) -> None:
        self.match = self.at(self.budget)

    def at(self, steps: int, clock: Optional[Clock] = None) -> QualityMatch:
        """The step ratio at equal quality when the baselines stop after ``steps`` steps.

        Args:
            steps: where the baselines stop (``0 <= steps <= budget``).
            clock: ``clock(start, k)``, the seconds ``k`` steps from ``start`` take, for the
                time figures (default: :attr:`times`, this run's own clock).

        Returns:
            The :class:`QualityMatch`.
        """
        check_int("steps", steps, 0)
        if steps > self.budget:
            raise ValueError(f"steps must be <= the budget {self.budget}, got {steps}")
        if clock is None:
            clock = self._measured
        baseline = min((k for k in self.curves if k != "encoder"), key=lambda k: self.curves[k][steps])
        target = self.curves[baseline][steps]
        enc = next((t for t, v in enumerate(self.curves["encoder"]) if v <= target), None)
        seconds = clock(baseline, steps)
        enc_seconds = None if enc is None else clock("encoder", enc)
        return QualityMatch(
            steps, target, baseline, enc,
            None if enc is None else (math.inf if enc == 0 else steps / enc),
            seconds, enc_seconds, None if enc_seconds is None else seconds / enc_seconds,
        )

    def _measured(self, start: str, steps: int) -> float:
        return self.times[start][steps]


def steps_to_quality(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    steps: int = 1000,
    baselines: Sequence[str] = ("random", "mean"),
    restarts: int = 4,
    lr: float = DEFAULT_LR,
    loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "mse",
    optimizer: Any = "adam",
    conditional: bool = False,
    scale: float = 0.9,
    batch_size: Optional[int] = None,
    seed: int = 0,
    callback: Optional[Callable[[str, int, Tensor], None]] = None,
) -> StepsToQuality:
    """How many times fewer inversion steps the encoder's start needs for the same loss.

    Runs :func:`ogan_plugin.invert` on ``images`` for ``steps`` steps from the encoder's
    code and from each baseline start (``"random"`` with ``restarts`` random codes per
    image, the best kept; ``"mean"``: z = 0), every start with the same optimizer, learning
    rate and loss, and no early stop.  The target is the mean loss the best baseline
    reaches in ``steps`` steps; the ratio is ``steps`` over the steps the encoder's start
    needs to reach it.  Wall times are measured per step (CUDA is synchronised at every
    step, so the times are honest but the runs a little slower than :func:`invert` alone).

    Args:
        generator: the generator (as in :func:`ogan_plugin.invert`).
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        images: held-out images (a tensor, or batches as in :func:`collect`).
        conditional: the data's labels go to both networks (``G(z, y)``,
            ``D.encode(x, y)``), as :func:`ogan_plugin.invert`'s ``y``.
        steps: the budget of every start.
        baselines: the non-encoder starts to compare with (``"random"``, ``"mean"``).
        restarts: random codes per image for ``"random"``.
        lr: the learning rate, as in :func:`ogan_plugin.invert`.
        loss: the loss, as in :func:`ogan_plugin.invert`.
        optimizer: the optimizer, as in :func:`ogan_plugin.invert`.
        scale: the encoder start's factor, as in :func:`ogan_plugin.invert`.
        batch_size: images optimised together, as in :func:`ogan_plugin.invert`.
        seed: seed of the random starts, as in :func:`ogan_plugin.invert`.
        callback: called as ``callback(start, step, z)`` after each step of each run with
            the best codes so far (e.g. to classify snapshots); its time is not counted.

    Returns:
        :class:`StepsToQuality`: the curves, the times, and ``match``, the goal's figures
        (``.match.ratio``, ``.match.time_ratio``); ``.at(k)`` gives the same figures with
        the baselines cut at ``k`` steps (``.at(k, clock)``: timed by another clock).

    Raises:
        ValueError: an unknown or repeated baseline, ``steps < 1``, or what
            :func:`ogan_plugin.invert` refuses.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_int("steps", steps, 1)
    baselines = list(baselines)
    if not baselines or any(b not in ("random", "mean") for b in baselines) or len(set(baselines)) != len(baselines):
        raise ValueError(f"baselines must be distinct names among 'random' and 'mean', got {baselines!r}")
    x, y = _data(images, conditional)
    device, _ = device_dtype(generator, d)
    curves: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    for start in ["encoder", *baselines]:
        stamps: list[float] = []
        spent = [0.0]

        def on_step(step: int, z: Tensor, start: str = start, stamps: list = stamps, spent: list = spent) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter() - t0 - spent[0])
            if callback is not None:
                s = time.perf_counter()
                callback(start, step, z)
                spent[0] += time.perf_counter() - s

        t0 = time.perf_counter()
        result = invert(
            generator, d, x, steps=steps, lr=lr, loss=loss, y=y, init=start, scale=scale,
            restarts=restarts if start == "random" else 1, optimizer=optimizer, batch_size=batch_size, seed=seed,
            callback=on_step,
        )
        curves[start] = result.history.double().mean(1).tolist()
        times[start] = stamps if len(stamps) == steps + 1 else _merge_batches(stamps, steps + 1)
    return StepsToQuality(steps, curves, times)


def _merge_batches(stamps: list[float], per_batch: int) -> list[float]:
    """Per-step times of a run in batches (one after another, ``per_batch`` stamps each):
    the time at step ``t`` is the sum over batches of the time each took to reach it."""
    runs = [stamps[i : i + per_batch] for i in range(0, len(stamps), per_batch)]
    began = [0.0] + [r[-1] for r in runs[:-1]]
    return [sum(r[t] - b for r, b in zip(runs, began)) for t in range(per_batch)]
