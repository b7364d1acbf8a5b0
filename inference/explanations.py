"""Explanations for the lesion classifier: class activation maps (CAM) and LIME.

Only numpy, Pillow, scikit-image and lime: no torch, no Django. The classifier is passed in;
anything with `classes`, `input_size`, `cam_weights` (C x K), `predict_arrays(nchw_float32)
-> (probabilities, logits, features)` works (`inference.classifier.LesionClassifier` does).

CAM
    The network ends in global average pooling + one linear layer, so the logit of class c is
    sum_k W[c, k] * mean_ij F[k, i, j] + b[c], and the map sum_k W[c, k] * F[k] is that logit
    spread over the feature-map grid. Grad-CAM on the last feature map reduces to the same map
    (the gradient of the logit wrt F[k, i, j] is W[c, k] / (h w)), which
    `inference/training/gradcam_reference.py` checks against torch autograd. The map comes
    from the single inference that also gives the prediction: no extra forward pass.
    The model input is a squash-resize of the whole image, so a plain resize of the map lays
    it back over the original photograph.

LIME
    `lime.lime_image.LimeImageExplainer` with SLIC superpixels on the image as the model sees
    it (squashed to the model input size), a vectorised perturbation step, and one explained
    class. Same image + settings + seed gives identical output. The settings were chosen by
    `benchmarks/explain.py` (time and top-5 stability between seeds); see LimeSettings.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from lime.lime_image import LimeImageExplainer
from PIL import Image, ImageOps
from skimage.segmentation import find_boundaries, slic

from inference.preprocessing import Size, input_wh, model_pixels, prepare_image

# LIME and CAM explain either one class or the malignancy risk, P(mel) + P(bcc) + P(akiec):
# the triage decision is about malignancy, so the portal explains the risk by default.
RISK = "risk"
RISK_NAME = "malignancy risk"


class ExplainableClassifier(Protocol):
    classes: list[str]
    input_size: Size
    cam_weights: np.ndarray
    malignant_indices: list[int]

    def predict_arrays(
        self, batch: np.ndarray, tta: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


# --------------------------------------------------------------------------------------------
# Class activation maps
# --------------------------------------------------------------------------------------------


def class_activation_maps(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Raw CAMs for every class: C x h x w, sum_k W[c, k] * features[k].

    features: K x h x w (or 1 x K x h x w) from the network's last feature map.
    weights: C x K, the final linear layer. The bias is left out, as in Grad-CAM: it would add
    the same b[c] / (h w) to every cell (the mean of the map plus b[c] is the logit) and only
    move the ReLU cut-off.
    """
    f = np.asarray(features, dtype=np.float32)
    if f.ndim == 4:
        if f.shape[0] != 1:
            raise ValueError(f"expected one image's features, got batch of {f.shape[0]}")
        f = f[0]
    w = np.asarray(weights, dtype=np.float32)
    if f.ndim != 3 or w.ndim != 2 or w.shape[1] != f.shape[0]:
        raise ValueError(f"features {f.shape} and weights {w.shape} do not match (K x h x w, C x K)")
    k, h, wd = f.shape
    return (w @ f.reshape(k, h * wd)).reshape(w.shape[0], h, wd)


def cam_from_features(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """Raw CAM (h x w) for one class."""
    w = np.asarray(weights, dtype=np.float32)
    return class_activation_maps(features, w[class_index : class_index + 1])[0]


def cam_weights_digest(weights: np.ndarray) -> str:
    """sha256 of CAM weights as float32: ties a stored reference to the final layer it used."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype=np.float32).tobytes()).hexdigest()


def normalise_heatmap(cam: np.ndarray) -> np.ndarray:
    """ReLU, then scaled so the peak is 1. An all-negative map (no evidence for the class
    anywhere) becomes all zeros rather than dividing by zero."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros_like(cam)
    return cam / peak


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [0, 1] heatmap to size = (width, height), as PIL orders it."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape == (size[1], size[0]):
        return heatmap
    resized = Image.fromarray(np.ascontiguousarray(heatmap)).resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


@dataclass
class CamResult:
    class_index: int
    class_name: str
    probabilities: np.ndarray  # C, from the same inference
    heatmap: np.ndarray  # h x w on the feature-map grid, in [0, 1]

    def at_size(self, size: tuple[int, int]) -> np.ndarray:
        return upsample(self.heatmap, size)


def compute_cam(classifier: ExplainableClassifier, image: Image.Image, class_index: int | None = None) -> CamResult:
    """One inference -> prediction and the CAM of `class_index` (default: the top class)."""
    x = _model_input(np.asarray(prepare_image(image, classifier.input_size), dtype=np.uint8)[None], classifier)
    probabilities, _, features = classifier.predict_arrays(x)
    return cam_for_prediction(classifier, probabilities[0], features[0], class_index)


def risk_cam_weights(probabilities: np.ndarray, weights: np.ndarray, malignant: list[int]) -> np.ndarray:
    """K weights whose CAM is Grad-CAM of the malignancy risk.

    risk = sum_{c in M} p_c with p = softmax(z / T), so d risk / d z_c = p_c (1[c in M] - risk) / T,
    and through the linear head d risk / d F[k] = sum_c (d risk / d z_c) W[c, k] / (h w). The
    positive factor 1 / (T h w) drops out when the map is normalised to its peak.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    in_m = np.zeros(len(p))
    in_m[malignant] = 1.0
    risk = float(p[malignant].sum())
    return ((p * (in_m - risk)) @ np.asarray(weights, dtype=np.float64)).astype(np.float32)


def cam_for_prediction(
    classifier: ExplainableClassifier,
    probabilities: np.ndarray,
    features: np.ndarray,
    class_index: int | str | None = None,
) -> CamResult:
    """CAM from an inference already made (the portal keeps `features` from its prediction).

    class_index: a class, None for the top class, or RISK for the malignancy risk."""
    if class_index == RISK:
        w = risk_cam_weights(probabilities, classifier.cam_weights, classifier.malignant_indices)
        heatmap = normalise_heatmap(cam_from_features(features, w[None], 0))
        return CamResult(-1, RISK_NAME, np.asarray(probabilities), heatmap)
    c = int(np.argmax(probabilities)) if class_index is None else int(class_index)
    heatmap = normalise_heatmap(cam_from_features(features, classifier.cam_weights, c))
    return CamResult(c, classifier.classes[c], np.asarray(probabilities), heatmap)


# Turbo colour map (Anton Mikhailov, Google, 2019; Apache-2.0), 17 evenly spaced samples of
# the published 256-entry table, linearly interpolated (within 0.03 of it): no matplotlib.
# Dark blue (cold) -> cyan -> green -> yellow -> red (hot).
_TURBO_POINTS = (
    np.array(
        [
            [48, 18, 59],
            [64, 64, 162],
            [70, 107, 227],
            [66, 148, 255],
            [40, 188, 235],
            [24, 221, 194],
            [50, 242, 152],
            [109, 254, 98],
            [164, 252, 60],
            [205, 236, 52],
            [238, 207, 58],
            [253, 172, 52],
            [251, 126, 33],
            [235, 80, 14],
            [208, 47, 5],
            [169, 22, 1],
            [122, 4, 3],
        ],
        dtype=np.float64,
    )
    / 255.0
)


def turbo(x: np.ndarray) -> np.ndarray:
    """Turbo colours for values in [0, 1] -> float RGB in [0, 1], shape x.shape + (3,)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    knots = np.linspace(0.0, 1.0, len(_TURBO_POINTS))
    return np.stack([np.interp(x, knots, _TURBO_POINTS[:, i]) for i in range(3)], axis=-1)


TURBO_LUT = np.round(turbo(np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)  # 256 x 3


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """[0, 1] heatmap (H x W) -> uint8 RGB (H x W x 3) through the turbo look-up table."""
    idx = np.round(np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return TURBO_LUT[idx]


def _display_image(image: Image.Image) -> Image.Image:
    """The photograph as the model saw it before the squash: orientation applied, RGB."""
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.45) -> Image.Image:
    """The heatmap in turbo colours blended over the photograph at its own size (RGB)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be in [0, 1]")
    base = _display_image(image)
    colours = colorize(upsample(heatmap, base.size)).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    blended = pixels * (1.0 - opacity) + colours * opacity
    return Image.fromarray(np.round(blended).astype(np.uint8), "RGB")


def heatmap_rgba(heatmap: np.ndarray, size: tuple[int, int], alpha_floor: float = 0.0) -> Image.Image:
    """The heatmap as an RGBA layer of size (width, height), for the page to stack over the
    photograph with an opacity slider. Alpha follows the heat (cold areas stay see-through);
    alpha_floor=1 gives a uniform, fully opaque layer."""
    heat = upsample(heatmap, size)
    alpha = np.round(255.0 * (alpha_floor + (1.0 - alpha_floor) * heat)).astype(np.uint8)
    return Image.fromarray(np.dstack([colorize(heat), alpha]), "RGBA")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# LIME
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimeSettings:
    """What a LIME explanation depends on; stored with each result (`params`).

    Chosen with `benchmarks/explain.py --sweep` on 20 validation images with the committed
    model: mean overlap of the top-5 superpixels between seeds 0 and 1, superpixels found.

        n_segments  compactness  samples  sampling    fill          overlap  superpixels
        20          10           200      lime        segment mean  0.81     15
        20          10           300      lime        segment mean  0.88     15
        25          10           200      lime        segment mean  0.78     23
        25          10           300      lime        segment mean  0.85     23
        25          10           300      lime        image mean    0.75     23
        25           5           300      lime        segment mean  0.79     21
        25          20           300      lime        segment mean  0.81     24
        50          10           300      lime        segment mean  0.67     47
        50          10           500      lime        segment mean  0.79     47
        25          10           200      antithetic  segment mean  0.83     23   <- chosen
        25          10           300      antithetic  segment mean  0.89     23
        50          10           200      antithetic  segment mean  0.59     47
        50          10           300      antithetic  segment mean  0.69     47

    The time is the model's (one inference per sample), and stability falls with the number
    of superpixels at a given sample count. ~23 superpixels (a 5 x 5 SLIC grid on the 160 px
    input; quickshift gives ~19-23 on these images) is the finest split that stays >= 0.8
    with few samples; pairing each random draw with its complement (antithetic sampling, as
    KernelSHAP pairs its samples) buys about the stability of 300 independent samples with
    200. SLIC on CIELAB follows the lesion border and pigment structures; lime's segment-mean
    fill beat a whole-image-mean fill.
    """

    n_segments: int = 25
    compactness: float = 10.0
    sigma: float = 1.0
    num_samples: int = 200
    batch_size: int = 100
    kernel_width: float = 0.25
    hide: str = "segment_mean"  # lime's default fill for a switched-off superpixel
    sampling: str = "antithetic"  # "lime": independent draws; "antithetic": each draw then its complement
    size: Size | None = None  # explained at this size (int: square); None: the model input size
    seed: int = 0
    top_k: int = 5

    def params(self, class_index: int, class_name: str, n_segments_found: int, size: Size) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            segmentation="slic",
            size=size if isinstance(size, int) else list(input_wh(size)),
            n_segments_found=n_segments_found,
            class_index=class_index,
            class_name=class_name,
        )
        return out


def segment(image: np.ndarray, settings: LimeSettings) -> np.ndarray:
    """SLIC superpixels of an H x W x 3 uint8 image, labelled 0..n-1 (lime indexes its
    perturbation matrix by label, so the labels must be contiguous from 0)."""
    labels = slic(
        image,
        n_segments=settings.n_segments,
        compactness=settings.compactness,
        sigma=settings.sigma,
        start_label=0,
        channel_axis=-1,
    )
    _, contiguous = np.unique(labels, return_inverse=True)
    return contiguous.reshape(labels.shape).astype(np.int32)


class VectorisedLimeImageExplainer(LimeImageExplainer):
    """LimeImageExplainer whose perturbed images are built with numpy indexing, a whole batch
    at once, instead of lime's per-sample, per-segment Python loop. Draws the same random
    matrix from the same random state, so the output equals lime's (tested).

    When the classifier function is a `probability_fn` and the image already has the model's
    input size, the batch is assembled directly in the model's normalised NCHW float32 layout
    (the original and the fill normalised once), skipping a uint8 batch and its conversion."""

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10, **_):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        if getattr(self, "antithetic", False):
            # Each draw followed by its complement: the pairs cancel even-order interactions
            # between superpixels in the linear fit, less variance for the same samples.
            data[1::2] = 1 - data[0 : num_samples - 1 : 2][: len(data[1::2])]
        direct = getattr(classifier_fn, "from_model_input", None)
        # Colour constancy depends on the whole image, so with it every perturbed image is
        # preprocessed on its own, exactly as the portal would preprocess it.
        if direct is not None and (image.shape[:2] != classifier_fn.shape or classifier_fn.colour_constancy):
            direct = None
        if direct is not None:
            image_in = _model_input(image[None])[0]  # 3 x H x W
            fudged_in = _model_input(fudged_image[None])[0]
        labels = []
        for start in range(0, num_samples, batch_size):
            keep = data[start : start + batch_size].astype(bool)[:, segments]  # b x H x W
            if direct is not None:
                labels.append(np.asarray(direct(np.where(keep[:, None], image_in[None], fudged_in[None]))))
            else:
                batch = np.where(keep[..., None], image[None], fudged_image[None])
                labels.append(np.asarray(classifier_fn(batch)))
        self.neighbourhood_labels = np.concatenate(labels)  # row 0: the unperturbed image
        return data, self.neighbourhood_labels


def _colour_constancy(classifier: object) -> bool:
    return bool(getattr(classifier, "colour_constancy", False))


def _model_input(batch_uint8: np.ndarray, classifier: object = None) -> np.ndarray:
    return np.ascontiguousarray(model_pixels(batch_uint8, _colour_constancy(classifier)).transpose(0, 3, 1, 2))


def _with_risk(probabilities: np.ndarray, malignant: list[int]) -> np.ndarray:
    """N x C probabilities -> N x (C + 1), the malignancy risk as the last column."""
    return np.concatenate([probabilities, probabilities[:, malignant].sum(axis=1, keepdims=True)], axis=1)


def probability_fn(classifier: ExplainableClassifier, with_risk: bool = False):
    """N x H x W x 3 uint8 images (as lime passes them) -> N x C probabilities (plus the risk
    as column C with `with_risk`), through the same preprocessing as
    `inference.preprocessing.to_model_input`. Its `from_model_input` takes batches already
    normalised (N x 3 x H x W float32)."""
    wh = input_wh(classifier.input_size)
    cc = _colour_constancy(classifier)

    def single_view(batch: np.ndarray) -> np.ndarray:
        # LIME explains the network on the image as it is: its hundreds of perturbed images
        # would cost 4-8 times as much through test-time augmentation.
        if getattr(classifier, "tta", "none") != "none":
            return classifier.predict_arrays(batch, tta=False)[0]
        return classifier.predict_arrays(batch)[0]

    def output(probabilities: np.ndarray) -> np.ndarray:
        return _with_risk(probabilities, classifier.malignant_indices) if with_risk else probabilities

    def predict(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.shape[1:3] != (wh[1], wh[0]):
            images = np.stack(
                [
                    np.asarray(Image.fromarray(img.astype(np.uint8)).resize(wh, Image.Resampling.BILINEAR))
                    for img in images
                ]
            )
        return output(single_view(_model_input(images.astype(np.uint8), classifier)))

    def from_model_input(batch: np.ndarray) -> np.ndarray:
        return output(single_view(batch))

    # Attributes on the function itself, which lime calls as a plain callable.
    predict.from_model_input = from_model_input  # type: ignore[attr-defined]
    predict.colour_constancy = cc  # type: ignore[attr-defined]
    predict.shape = (wh[1], wh[0])  # type: ignore[attr-defined]
    return predict


@dataclass
class LimeExplanation:
    class_index: int
    class_name: str
    probability: float  # of the explained class, on the unperturbed image
    image: np.ndarray  # the explained image (H x W x 3 uint8, squashed like the model input)
    segments: np.ndarray  # H x W int32, 0..n-1
    weights: np.ndarray  # n, local linear weight of each superpixel for the explained class
    intercept: float
    score: float  # weighted R^2 of lime's local linear model
    params: dict[str, Any] = field(default_factory=dict)

    def top_segments(self, k: int | None = None, positive: bool = True) -> list[int]:
        """Up to k superpixels pushing towards (positive) or against the class, strongest first."""
        k = self.params.get("top_k", 5) if k is None else k
        order = np.argsort(-self.weights if positive else self.weights, kind="stable")
        chosen = [int(i) for i in order if (self.weights[i] > 0 if positive else self.weights[i] < 0)]
        return chosen[:k]

    @property
    def top_positive(self) -> list[int]:
        return self.top_segments(positive=True)

    @property
    def top_negative(self) -> list[int]:
        return self.top_segments(positive=False)

    def weight_map(self) -> np.ndarray:
        """Per-pixel weight at the explained size (each pixel gets its superpixel's weight)."""
        return self.weights[self.segments].astype(np.float32)

    def segments_at(self, size: tuple[int, int]) -> np.ndarray:
        """Superpixel labels resized (nearest) to size = (width, height)."""
        if self.segments.shape == (size[1], size[0]):
            return self.segments
        return np.asarray(Image.fromarray(self.segments.astype(np.int32)).resize(size, Image.Resampling.NEAREST))

    def render(self, image: Image.Image | None = None, k: int | None = None, opacity: float = 0.5) -> Image.Image:
        """RGB overlay: the top-k superpixels for the class tinted green, the top-k against it
        red (stronger weight, stronger tint), their outlines drawn. Drawn over `image` (the
        original photograph, at its own size) or, if None, over the explained image."""
        base = Image.fromarray(self.image) if image is None else _display_image(image)
        segments = self.segments_at(base.size)
        pixels = np.asarray(base, dtype=np.float32).copy()
        peak = float(np.abs(self.weights).max()) or 1.0
        for ids, colour in ((self.top_segments(k, True), (0, 200, 0)), (self.top_segments(k, False), (220, 0, 0))):
            if not ids:
                continue
            alpha = np.zeros(len(self.weights), dtype=np.float32)
            alpha[ids] = opacity * (0.5 + 0.5 * np.abs(self.weights[ids]) / peak)
            a = alpha[segments][..., None]
            pixels = pixels * (1.0 - a) + np.array(colour, dtype=np.float32) * a
            chosen = np.isin(segments, ids)
            edges = find_boundaries(np.where(chosen, segments + 1, 0), mode="inner") & chosen
            pixels[edges] = colour
        return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the segments array is stored separately, e.g. as .npy or PNG)."""
        return {
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": self.probability,
            "weights": [float(w) for w in self.weights],
            "intercept": self.intercept,
            "score": self.score,
            "top_positive": self.top_positive,
            "top_negative": self.top_negative,
            "params": self.params,
        }


def explain_lime(
    classifier: ExplainableClassifier,
    image: Image.Image,
    class_index: int | str | None = None,
    settings: LimeSettings = LimeSettings(),
) -> LimeExplanation:
    """LIME explanation of `class_index` (a class; None: the top class; RISK: the malignancy
    risk, explained as an extra output column) for one photograph."""
    if settings.hide not in ("segment_mean", "image_mean"):
        raise ValueError(f"unknown hide mode {settings.hide!r}")
    if settings.sampling not in ("lime", "antithetic"):
        raise ValueError(f"unknown sampling {settings.sampling!r}")
    size = settings.size or classifier.input_size
    pixels = np.asarray(prepare_image(image, size), dtype=np.uint8)
    segments = segment(pixels, settings)
    n = int(segments.max()) + 1
    hide_color = None if settings.hide == "segment_mean" else tuple(float(v) for v in pixels.reshape(-1, 3).mean(0))
    explainer = VectorisedLimeImageExplainer(
        kernel_width=settings.kernel_width, feature_selection="none", random_state=settings.seed
    )
    explainer.antithetic = settings.sampling == "antithetic"
    explain_risk = class_index == RISK
    if explain_risk:
        class_index = len(classifier.classes)
    explanation = explainer.explain_instance(
        pixels,
        probability_fn(classifier, with_risk=explain_risk),
        labels=() if class_index is None else (int(class_index),),
        top_labels=1 if class_index is None else None,
        hide_color=hide_color,
        num_features=n,
        num_samples=settings.num_samples,
        batch_size=settings.batch_size,
        segmentation_fn=lambda _: segments,
        random_seed=settings.seed,
    )
    c = int(explanation.top_labels[0]) if class_index is None else int(class_index)
    weights = np.zeros(n, dtype=np.float64)
    for feature, weight in explanation.local_exp[c]:
        weights[feature] = weight
    name = RISK_NAME if explain_risk else classifier.classes[c]
    return LimeExplanation(
        class_index=-1 if explain_risk else c,
        class_name=name,
        probability=float(explainer.neighbourhood_labels[0, c]),
        image=pixels,
        segments=segments,
        weights=weights,
        intercept=float(explanation.intercept[c]),
        score=float(explanation.score),
        params=settings.params(-1 if explain_risk else c, name, n, size),
    )
