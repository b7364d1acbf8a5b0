"""Can this image be assessed? A check that runs before a risk is shown (issue #10).

Django-free: Pillow, numpy, scipy and the classifier's own outputs. It answers whether the
classifier's risk for an image may be shown, and if not, why:

    code                 when
    too_dark             the brightest part of the central field is still dark
    overexposed          much of the central field is clipped white
    blurred              almost no fine detail is left (out of focus, motion)
    not_dermoscopic      colours or edges no dermoscopic close-up of skin has (a greyscale photo
                         or document, garish saturated colour, dense sharp edges such as text)
    out_of_distribution  the model's pooled features are far from every class of its training
                         images (class-conditional Mahalanobis distance in a PCA space), or lie
                         far outside that space (PCA residual), or the logits' energy is high

The first four are fixed heuristics on the image itself (thresholds set outside the range of
600 seeded training images, with margin; they need no fitted file). The last needs the
statistics that `python -m inference.training.fit_image_check --data ../shared/data/ham10000`
fits on TRAINING images and calibrates on VALIDATION images (so that at most ~1.5 % of the
validation split is refused); they are committed next to the model as
`inference/models/image_check.json` (thresholds, sha256 of the arrays, sha256 of the ONNX model
they were fitted for) and `inference/models/image_check.npy` (the PCA space). When the file is
missing, does not match its recorded sha256, or was fitted for another model file, only the
heuristics run and the result says so (`model_checks_used=False`, `notes`).

    from inference.classifier import get_classifier
    from inference.image_check import ImageChecker

    checker = ImageChecker(get_classifier())              # loads and verifies the statistics
    result = checker.check(pil_image)                     # runs the model itself, or:
    probs, logits, features = clf.predict_arrays(clf.preprocess([pil_image]))
    result = checker.check(pil_image, logits=logits[0], features=features[0])   # reuse the inference
    result.assessable          # False: show "cannot assess - please retake", raise no alert
    result.reasons             # [Reason(code="blurred", message="The image is blurred ...")]
    result.scores              # every measured score, e.g. {"sharpness": 0.8, "mahalanobis": 41.2}
    result.to_dict()           # JSON-ready

`result.score` is one number for ranking (the largest margin over any threshold, in units of
that score's spread on training images; >= 0 means refused): the benchmark's AUROC uses it.
The model input always comes from the classifier's own `preprocess()` / `predict_arrays()`,
so the check is right for whatever model is committed (square model 1, 4:3 model 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

STATS_FILE = "image_check.json"
STATS_VERSION = 2
# The out-of-distribution scores, each with its own threshold fitted on validation.
MODEL_SCORES = ("mahalanobis", "pca_residual", "energy")
# The image is looked at with about the pixel count of the data set's 200 x 150 images, so
# that the blur and edge measures mean the same for a phone photo and a dermatoscope export.
WORK_PIXELS = 30_000

# Heuristic thresholds, set outside the ranges of 600 seeded training images with margin:
# central p95 luminance 75..251, clipped fraction 0..0.21, sharpness 1.8..34, edge fraction
# 0..0.073, mean saturation 0.077..0.59. Sharpness 0.75 refuses a Gaussian blur of radius 3
# (validation median 0.60) and more, about half of radius 2 (median 0.84). The edge limit is 0.2, not ~0.1: sharp, hairy
# validation images reach 0.17. (A "red-dominant colour" rule was tried and dropped: bluish
# and purplish HAM10000 images fail it, 7 of 1,280 validation images.)
MIN_CENTRAL_P95_LUMINANCE = 55.0
MAX_CLIPPED_FRACTION = 0.40
MAX_CENTRAL_MEAN_LUMINANCE = 225.0
MIN_SHARPNESS = 0.75
MAX_EDGE_FRACTION = 0.20
MIN_MEAN_SATURATION = 0.05
MAX_MEAN_SATURATION = 0.68

# Spread of each heuristic score on the training images: turns a distance from a threshold
# into a comparable margin for `ImageCheckResult.score`.
_SPREAD = {
    "central_p95_luminance": 45.0,
    "clipped_fraction": 0.1,
    "central_mean_luminance": 40.0,
    "sharpness": 2.0,
    "edge_fraction": 0.02,
    "mean_saturation": 0.12,
}

MESSAGES = {
    "too_dark": "The image is too dark to assess. Please retake it with more light.",
    "overexposed": "The image is overexposed (washed out). Please retake it with less light or no flash glare.",
    "blurred": "The image is blurred. Please hold the camera still and focus on the lesion.",
    "not_dermoscopic": (
        "This does not look like a dermoscopic close-up of skin. Please upload a close-up of the lesion."
    ),
    "out_of_distribution": (
        "The image is unlike the images the model was trained on, so its risk would not be reliable. "
        "Please retake a dermoscopic close-up of the lesion."
    ),
}


class ImageCheckStatsError(ValueError):
    """The fitted statistics file is unreadable or inconsistent."""


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass
class ImageCheckResult:
    assessable: bool
    reasons: list[Reason]
    scores: dict[str, float]
    score: float
    model_checks_used: bool
    notes: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def to_dict(self) -> dict:
        return asdict(self)


def _working_image(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    s = (WORK_PIXELS / (w * h)) ** 0.5
    size = (max(16, round(w * s)), max(16, round(h * s)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def image_scores(image: Image.Image) -> dict[str, float]:
    """The heuristic scores of one image (model-independent)."""
    x = _working_image(image)
    h, w = x.shape[:2]
    luminance = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # The central half of each side: outside a dermatoscope's dark frame.
    central = luminance[h // 4 : h - h // 4, w // 4 : w - w // 4]
    laplacian = ndimage.laplace(ndimage.gaussian_filter(luminance, 0.5))
    gy, gx = np.gradient(luminance)
    top, bottom = x.max(axis=-1), x.min(axis=-1)
    saturation = (top - bottom) / np.maximum(top, 1.0)
    lit = top > 30  # the frame and shadows say nothing about colour
    return {
        "central_p95_luminance": float(np.percentile(central, 95)),
        "central_mean_luminance": float(central.mean()),
        "clipped_fraction": float((central >= 245).mean()),
        "sharpness": float(laplacian.std()),
        "edge_fraction": float((np.hypot(gx, gy) > 40).mean()),
        "mean_saturation": float(saturation[lit].mean()) if lit.any() else 0.0,
    }


def _below(scores, key, limit):
    return (limit - scores[key]) / _SPREAD[key]


def _above(scores, key, limit):
    return (scores[key] - limit) / _SPREAD[key]


def heuristic_margins(scores: dict[str, float]) -> dict[str, float]:
    """Reason code -> margin over its threshold (>= 0: the reason applies)."""
    return {
        "too_dark": _below(scores, "central_p95_luminance", MIN_CENTRAL_P95_LUMINANCE),
        "overexposed": max(
            _above(scores, "clipped_fraction", MAX_CLIPPED_FRACTION),
            _above(scores, "central_mean_luminance", MAX_CENTRAL_MEAN_LUMINANCE),
        ),
        "blurred": _below(scores, "sharpness", MIN_SHARPNESS),
        "not_dermoscopic": max(
            _above(scores, "edge_fraction", MAX_EDGE_FRACTION),
            _below(scores, "mean_saturation", MIN_MEAN_SATURATION),
            _above(scores, "mean_saturation", MAX_MEAN_SATURATION),
        ),
    }


def pooled(features: np.ndarray) -> np.ndarray:
    """C x H x W (or N x C x H x W) feature maps -> their global average (the classifier head's input)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=(-2, -1))


def energy(logits: np.ndarray) -> np.ndarray:
    """Energy score -logsumexp(logits) (Liu et al. 2020): higher = less like the training data."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    return -(top[..., 0] + np.log(np.exp(z - top).sum(axis=-1)))


@dataclass
class FeatureStats:
    """A PCA space of the pooled training features, and two distances from the training data.

    z = V (f - mean), V (k x D) the top-k principal directions (orthonormal rows).
    - mahalanobis(f) = min_c |W (z - m_c)|^2: class-conditional Gaussians with a tied covariance
      (Lee et al. 2018); W (k x k) whitens by the within-class covariance, m_c the class means;
    - residual(f) = |(f - mean) - V'z|: the part of f outside the top-k directions (as in ViM,
      Wang et al. 2022) - new kinds of images show up there rather than inside the subspace.
    Stored as one float32 array (1 + 2k + C) x D: the mean, V, W and the class means
    (both zero-padded to D columns).
    """

    mean: np.ndarray
    basis: np.ndarray
    whiten: np.ndarray
    class_means: np.ndarray

    def to_array(self) -> np.ndarray:
        k, d = self.basis.shape
        whiten = np.zeros((k, d))
        whiten[:, :k] = self.whiten
        means = np.zeros((len(self.class_means), d))
        means[:, :k] = self.class_means
        return np.vstack([self.mean[None, :], self.basis, whiten, means]).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, components: int, n_classes: int) -> FeatureStats:
        k = components
        if array.ndim != 2 or array.shape[0] != 1 + 2 * k + n_classes or k > array.shape[1]:
            raise ImageCheckStatsError(
                f"statistics array of shape {array.shape} does not hold 1 + 2 x {k} + {n_classes} rows"
            )
        arr = array.astype(np.float64)
        return cls(arr[0], arr[1 : 1 + k], arr[1 + k : 1 + 2 * k, :k], arr[1 + 2 * k :, :k])

    def _centred(self, pooled_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_2d(np.asarray(pooled_features, dtype=np.float64)) - self.mean
        return x, x @ self.basis.T

    def distance(self, pooled_features: np.ndarray) -> np.ndarray:
        """Class-conditional Mahalanobis distance (squared) in the PCA space."""
        _, z = self._centred(pooled_features)
        w = (z[:, None, :] - self.class_means[None, :, :]) @ self.whiten.T
        return (w**2).sum(axis=-1).min(axis=1)

    def residual(self, pooled_features: np.ndarray) -> np.ndarray:
        """Norm of the features outside the PCA space."""
        x, z = self._centred(pooled_features)
        return np.linalg.norm(x - z @ self.basis, axis=1)


def fit_feature_stats(pooled_features: np.ndarray, labels: np.ndarray, components: int = 64) -> FeatureStats:
    """PCA on the pooled training features, then a tied within-class covariance in that space."""
    x = np.asarray(pooled_features, dtype=np.float64)
    labels = np.asarray(labels)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = min(components, vt.shape[0])
    basis = vt[:components]
    z = (x - mean) @ basis.T
    classes = np.unique(labels)
    class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    within = z - class_means[np.searchsorted(classes, labels)]
    cov = within.T @ within / max(1, len(z) - len(classes)) + 1e-6 * np.eye(components)
    evals, evecs = np.linalg.eigh(cov)
    whiten = (evecs / np.sqrt(evals)).T  # |whiten z|^2 = z' cov^-1 z
    return FeatureStats(mean, basis, whiten, class_means)


def default_stats_path(classifier) -> Path:
    return Path(classifier.metadata_path).parent / STATS_FILE


def _sha256(path: Path) -> str:
    from inference.classifier import sha256_file

    return sha256_file(path)


class ImageChecker:
    """The image check for one classifier; see the module docstring."""

    def __init__(self, classifier, stats_path: str | os.PathLike | None = None) -> None:
        self.classifier = classifier
        self.stats_path = Path(stats_path) if stats_path is not None else default_stats_path(classifier)
        self.notes: list[str] = []
        self.feature_stats: FeatureStats | None = None
        self.thresholds: dict[str, float] = {}
        self.spreads: dict[str, float] = {}
        self.stats_meta: dict = {}
        try:
            self._load()
        except ImageCheckStatsError as exc:
            self.feature_stats = None
            self.notes.append(f"out-of-distribution check off, heuristic checks only: {exc}")

    @property
    def model_checks_used(self) -> bool:
        return self.feature_stats is not None

    def _load(self) -> None:
        if not self.stats_path.is_file():
            raise ImageCheckStatsError(f"no fitted statistics at {self.stats_path}")
        try:
            meta = json.loads(self.stats_path.read_text())
            arrays_path = self.stats_path.parent / meta["arrays_file"]
            model_sha, arrays_sha = meta["model_sha256"], meta["arrays_sha256"]
            thresholds = {k: float(v) for k, v in meta["thresholds"].items()}
            spreads = {k: float(v) for k, v in meta["spreads"].items()}
            components, n_classes = int(meta["components"]), int(meta["n_classes"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ImageCheckStatsError(f"{self.stats_path} cannot be read: {exc!r}") from exc
        if model_sha != self.classifier.sha256:
            raise ImageCheckStatsError(
                f"{self.stats_path} was fitted for model sha256 {str(model_sha)[:12]}, not for the loaded "
                f"model {self.classifier.sha256[:12]}; re-run python -m inference.training.fit_image_check"
            )
        if set(thresholds) != set(MODEL_SCORES) or set(spreads) != set(thresholds):
            raise ImageCheckStatsError(f"{self.stats_path}: thresholds and spreads must name {', '.join(MODEL_SCORES)}")
        if not arrays_path.is_file() or _sha256(arrays_path) != arrays_sha:
            raise ImageCheckStatsError(f"{arrays_path} is missing or does not match its sha256 in {self.stats_path}")
        array = np.load(arrays_path, allow_pickle=False)
        if n_classes != len(self.classifier.classes):
            raise ImageCheckStatsError(
                f"{self.stats_path}: {n_classes} classes, the model has {len(self.classifier.classes)}"
            )
        self.feature_stats = FeatureStats.from_array(array, components, n_classes)
        self.thresholds, self.spreads, self.stats_meta = thresholds, spreads, meta

    def model_scores(self, logits: np.ndarray, features: np.ndarray) -> dict[str, float]:
        """Out-of-distribution scores of one image from the classifier's logits (C) and feature maps."""
        if self.feature_stats is None:
            return {}
        f = pooled(features)
        return {
            "mahalanobis": float(self.feature_stats.distance(f)[0]),
            "pca_residual": float(self.feature_stats.residual(f)[0]),
            "energy": float(energy(logits)),
        }

    def check(
        self, image: Image.Image, logits: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> ImageCheckResult:
        """Checks one PIL image; pass the logits and feature maps of an inference already made to skip it."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        scores = image_scores(image)
        margins = heuristic_margins(scores)
        if self.feature_stats is not None:
            if logits is None or features is None:
                _, batch_logits, batch_features = self.classifier.predict_arrays(self.classifier.preprocess([image]))
                logits, features = batch_logits[0], batch_features[0]
            model = self.model_scores(np.asarray(logits), np.asarray(features))
            scores.update(model)
            margins["out_of_distribution"] = max(
                (model[k] - self.thresholds[k]) / self.spreads[k] for k in MODEL_SCORES
            )
        # The clearest reason first: a portal that shows one shows that one.
        applying = sorted(((m, code) for code, m in margins.items() if m >= 0), reverse=True)
        reasons = [Reason(code, MESSAGES[code]) for _, code in applying]
        return ImageCheckResult(
            assessable=not reasons,
            reasons=reasons,
            scores=scores,
            score=float(max(margins.values())),
            model_checks_used=self.feature_stats is not None,
            notes=list(self.notes),
        )

    def check_batch(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[ImageCheckResult]:
        """Checks many images, running the model in batches."""
        results: list[ImageCheckResult] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            if self.feature_stats is not None and chunk:
                _, logits, features = self.classifier.predict_arrays(self.classifier.preprocess(chunk))
                results += [self.check(im, logits[i], features[i]) for i, im in enumerate(chunk)]
            else:
                results += [self.check(im) for im in chunk]
        return results
