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

Generators that take their noise in another layout than ``(B, z_dim)`` (the DCGAN
example's ``(B, z_dim, 1, 1)``): every function that feeds the generator takes
``z_shape=``, the per-sample shape; without it the layout hook mode saw, or a
``SingleLossStep`` was built with, is used (:mod:`ogan_plugin.layout`), and a generator
that rejects flat codes raises a ``ValueError`` that names ``z_shape``.

The module is split for size: :mod:`ogan_plugin.evaluation.data` (plumbing,
:func:`generate`), :mod:`ogan_plugin.evaluation.classifier` (the classifier, the probe,
sample quality) and :mod:`ogan_plugin.evaluation.steps` (steps to quality); import every
name from here.  The classifiers need scikit-learn (``pip install 'ogan-plugin[demo]'``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ogan_plugin.checks import check_int, check_number
from ogan_plugin.evaluation.classifier import (
    PixelClassifier,
    SampleQuality,
    frechet_distance,
    linear_probe,
    sample_quality,
)
from ogan_plugin.evaluation.data import (
    DataLike,
    _data,
    _draw_labels,
    _labelled_batches,
    _noise,
    _require_labels,
    collect,
    generate,
)
from ogan_plugin.evaluation.steps import Clock, QualityMatch, StepsToQuality, steps_to_quality
from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.labels import check_conditional
from ogan_plugin.layout import generator_feed, resolve_z_shape
from ogan_plugin.networks import device_dtype, eval_mode
from ogan_plugin.reconstruction import reconstruct_checked

__all__ = [
    "Clock",
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
    "encode_batched",
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
    z_shape: Optional[Sequence[int]] = None,
) -> float:
    """Mean over fresh ``z ~ N(0, I)`` of the Pearson correlation rho(z, E(G(z))).

    1 means the encoder recovers the noise up to the shift and scale the correlation
    ignores.  Both modules run in eval mode.  With labels ``y`` (``n_samples`` of them,
    conditional GANs): rho(z, E(G(z, y), y)).  ``z_shape``: the per-sample shape G takes
    its noise in (see the module doc; default: as known, else ``(z_dim,)``).
    """
    from ogan_plugin.correlation import pearson_correlation

    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    check_conditional(generator, d, y, n_samples)
    feed = generator_feed(generator, z_shape, d.z_dim, d)
    device, dtype = device_dtype(generator, d)
    z = _noise(n_samples, d.z_dim, seed, device, dtype)
    y = None if y is None else y.to(device)
    rhos = []
    with eval_mode(generator, d):
        for zb, labels in _labelled_batches(z, y, batch_size):
            e = d.raw_outputs(feed(zb, *labels), *labels)[0]
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
    z_shape: Optional[Sequence[int]] = None,
) -> Tensor:
    """``G(scale * encode(x))`` for every image (eval mode, in batches), as float32 on
    the images' device.  ``conditional``: the data's labels go to both networks,
    ``G(scale * encode(x, y), y)``; ``z_shape``: G's input layout (module doc)."""
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_number("scale", scale, positive=True)
    check_int("batch_size", batch_size, 1)
    x, y = _data(images, conditional)
    check_conditional(generator, d, y, x.shape[0])
    feed = generator_feed(generator, z_shape, d.z_dim, d)
    device, dtype = device_dtype(d, generator)
    out = []
    with eval_mode(generator, d):
        for b, labels in _labelled_batches(x, y, batch_size):
            yb = labels[0].to(device) if labels else None
            out.append(reconstruct_checked(generator, d, b.to(device=device, dtype=dtype), scale, yb, feed).float())
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
    z_shape: Optional[Sequence[int]] = None,
) -> ReconstructionError:
    """Pixel MSE of ``G(scale * encode(x))`` against ``x``, and of the mean image.

    ``mean_image`` (C, H, W) is the "know nothing" prediction; pass the training set's
    mean (default: the mean of ``images`` themselves).  ``conditional``: the data's
    labels go to both networks.  ``z_shape``: G's input layout (module doc).
    """
    x, y = _data(images, conditional)
    x = x.float()
    rec = reconstruct_batched(
        generator, wrapped_discriminator, x if y is None else (x, y), scale=scale, batch_size=batch_size,
        conditional=conditional, z_shape=z_shape,
    )
    if rec.shape != x.shape:
        raise ValueError(f"the generator's images {tuple(rec.shape[1:])} differ from the data's {tuple(x.shape[1:])}")
    m = x.mean(0) if mean_image is None else mean_image.to(x).reshape(x.shape[1:])
    return ReconstructionError(float((rec - x).pow(2).mean()), float((m.expand_as(x) - x).pow(2).mean()))



def class_agreement(
    classifier: PixelClassifier,
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    scale: float = 0.9,
    batch_size: int = 256,
    conditional: bool = False,
    z_shape: Optional[Sequence[int]] = None,
) -> float:
    """Fraction of ``images`` whose reconstruction ``G(scale * encode(x))`` gets the same
    label from ``classifier`` as ``x`` itself (``conditional``: the data's labels go to
    both networks; ``z_shape``: G's input layout, module doc)."""
    x, y = _data(images, conditional)
    rec = reconstruct_batched(
        generator, wrapped_discriminator, x if y is None else (x, y), scale=scale, batch_size=batch_size,
        conditional=conditional, z_shape=z_shape,
    )
    return float((classifier.predict(rec) == classifier.predict(x)).double().mean())


# --- linear probes -------------------------------------------------------------------------
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
    z_shape: Optional[Sequence[int]] = None,
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
        z_shape: the per-sample shape the generator takes its noise in (e.g.
            ``(z_dim, 1, 1)``); default: the layout hook mode saw or a ``SingleLossStep``
            was built with, else ``(z_dim,)`` (module doc).

    Raises:
        ValueError: ``conditional`` without labelled data, or labels the networks do
            not take.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    if z_shape is None:  # known through D (a hook on it) too, which sample_quality (G alone) cannot see
        layout = resolve_z_shape(None, d.z_dim, generator, d)
        z_shape = layout.shape if layout.known else None
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
        generator, d, test_data, mean_image=xtr.mean(0), scale=scale, batch_size=batch_size, conditional=conditional,
        z_shape=z_shape,
    )
    report = EncoderReport(
        mean_rho=mean_correlation(generator, d, n_samples, seed=seed, batch_size=batch_size, y=sample_y, z_shape=z_shape),
        reconstruction_mse=rec.mse,
        mean_image_mse=rec.mean_image_mse,
    )
    if ytr is None or yte is None:
        return report
    clf = classifier if classifier is not None else PixelClassifier().fit(xtr, ytr)
    recs = reconstruct_batched(
        generator, d, test_data, scale=scale, batch_size=batch_size, conditional=conditional, z_shape=z_shape
    )
    pred_src, pred_rec = clf.predict(xte), clf.predict(recs)
    report.class_agreement = float((pred_src == pred_rec).double().mean())
    report.reconstruction_accuracy = float((pred_rec == yte.cpu()).double().mean())
    report.classifier_accuracy = float((pred_src == yte.cpu()).double().mean())
    probe = probe_codes_and_pixels(d, xtr, ytr, xte, yte, batch_size=batch_size, conditional=conditional)
    report.probe_code_accuracy, report.probe_pixel_accuracy = probe.code, probe.pixels
    sample_y = _draw_labels(ytr, n_samples, seed + 1) if conditional else None
    sq = sample_quality(
        generator, clf, xtr, d.z_dim, n_samples, seed=seed + 1, batch_size=batch_size, y=sample_y, z_shape=z_shape
    )
    report.sample_confidence = sq.confidence
    report.sample_classes_present = sq.classes_present
    report.sample_class_counts = sq.class_counts
    report.frechet = sq.frechet
    report.frechet_reference = frechet_distance(clf.features(xtr), clf.features(xte))
    report.n_classes = len(clf.classes) if clf.classes is not None else None
    return report
