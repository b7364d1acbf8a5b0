"""CAM and LIME explanations (inference.explanations): no database, no Django views.

The CAM is checked against torch Grad-CAM stored in data/gradcam_reference.json (written by
`python -m inference.training.gradcam_reference` from the checkpoint the committed model was
exported from), fed by the committed ONNX model's features and CAM weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lime.lime_image import LimeImageExplainer
from PIL import Image

from inference import explanations as ex
from inference.preprocessing import prepare_image

REFERENCE = Path(__file__).resolve().parent / "data" / "gradcam_reference.json"
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
QUICK = ex.LimeSettings(n_segments=30, num_samples=60, batch_size=30)


@pytest.fixture(scope="module")
def reference():
    """The stored torch reference plus its validation images, read by id from the shared data
    set (images are never committed)."""
    from inference.training.data import decode, read_image_bytes
    from tests.conftest import require_data_set

    data_dir = require_data_set()
    data = json.loads(REFERENCE.read_text())
    raw = read_image_bytes(data_dir, wanted=set(data["image_ids"]))
    data["images"] = [np.asarray(decode(raw[i]).convert("RGB"), dtype=np.uint8) for i in data["image_ids"]]
    data["gradcam"] = np.asarray(data["gradcam"], dtype=np.float32)
    data["logits"] = np.asarray(data["logits"], dtype=np.float32)
    size = data["input_size"]
    data["input_size"] = size if isinstance(size, int) else tuple(size)
    if "gradcam_risk" in data:
        data["gradcam_risk"] = np.asarray(data["gradcam_risk"], dtype=np.float32)
    return data


@pytest.fixture(scope="module")
def classifier():
    from inference.classifier import LesionClassifier, default_metadata_path
    from tests.conftest import require_model

    require_model()
    return LesionClassifier(default_metadata_path(), threads=1)


class ToyClassifier:
    """A numpy network with the runtime classifier's interface and the same head structure
    (feature map -> global average pool -> linear): features are a fixed random 1x1 projection
    of 32 x 32 average-pooled pixels through ReLU6, so it has real CAMs. Class 1's logit also
    grows with the pixel spread (texture) in the top-left quarter of the image, which gives
    LIME a known answer."""

    classes = CLASSES
    input_size = 64
    temperature = 1.0

    def __init__(self, channels: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.projection = rng.normal(size=(channels, 3)).astype(np.float32)
        self.cam_weights = rng.normal(size=(len(CLASSES), channels)).astype(np.float32)
        self.cam_bias = rng.normal(size=len(CLASSES)).astype(np.float32)

    def predict_arrays(self, batch):
        n, _, s, _ = batch.shape
        pooled = batch.reshape(n, 3, s // 32, 32, s // 32, 32).mean(axis=(3, 5))  # n x 3 x 2 x 2
        features = np.clip(np.einsum("kc,nchw->nkhw", self.projection, pooled), 0, 6).astype(np.float32)
        logits = features.mean(axis=(2, 3)) @ self.cam_weights.T + self.cam_bias
        logits[:, 1] += 8.0 * batch[:, :, : s // 2, : s // 2].std(axis=(1, 2, 3))
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32), logits, features


def photo(seed: int = 0, size=(96, 72)) -> Image.Image:
    """A noisy 'photograph' (4:3 like HAM10000): random texture over a smooth gradient."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(40, 200, w)[None, :, None] * np.ones((h, 1, 3))
    return Image.fromarray(np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------ CAM


def test_cam_is_the_class_weighted_sum_of_feature_channels():
    rng = np.random.default_rng(1)
    features = rng.random((8, 3, 4), dtype=np.float32)
    weights = rng.normal(size=(5, 8)).astype(np.float32)
    expected = sum(weights[2, k] * features[k] for k in range(8))
    np.testing.assert_allclose(ex.cam_from_features(features, weights, 2), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.class_activation_maps(features[None], weights)[2], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        ex.class_activation_maps(features, weights[:, :7])


def test_normalised_heatmap_is_relu_then_peak_one():
    heat = ex.normalise_heatmap(np.array([[-2.0, 0.0], [1.0, 4.0]]))
    np.testing.assert_allclose(heat, [[0.0, 0.0], [0.25, 1.0]])
    assert not ex.normalise_heatmap(-np.ones((3, 3))).any()  # no evidence anywhere: zeros, not NaN


def test_upsample_keeps_range_and_orientation():
    heat = np.zeros((5, 5), np.float32)
    heat[0, 4] = 1.0  # top-right cell
    big = ex.upsample(heat, (200, 150))
    assert big.shape == (150, 200)
    assert big.dtype == np.float32
    assert big.min() >= 0.0
    assert big.max() <= 1.0
    row, col = np.unravel_index(np.argmax(big), big.shape)
    assert row < 30
    assert col > 170


def test_cam_of_toy_network_is_its_logit_spread_over_the_grid():
    clf = ToyClassifier()
    _probs, logits, features = clf.predict_arrays(
        np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    )
    raw = ex.class_activation_maps(features[0], clf.cam_weights)
    # mean of the raw map + bias = the head's logit (class 1 has the extra texture term)
    head = raw.mean(axis=(1, 2)) + clf.cam_bias
    np.testing.assert_allclose(np.delete(head, 1), np.delete(logits[0], 1), rtol=1e-5, atol=1e-5)
    result = ex.compute_cam(clf, photo())
    assert result.class_index == int(
        np.argmax(clf.predict_arrays(ex._model_input(np.asarray(prepare_image(photo(), 64))[None]))[0][0])
    )
    assert result.heatmap.shape == (2, 2)
    assert result.heatmap.max() == pytest.approx(1.0)
    assert result.heatmap.min() >= 0.0
    assert ex.compute_cam(clf, photo(), class_index=3).class_name == "df"


def test_committed_model_cam_matches_torch_gradcam_reference(classifier, reference):
    """ONNX features + committed CAM weights + numpy CAM == torch autograd Grad-CAM of the
    checkpoint, for every class of every stored validation image."""
    assert reference["input_size"] == classifier.input_size
    assert list(reference["classes"]) == classifier.classes
    exported_from = classifier.metadata.get("training", {}).get("checkpoint_sha256")
    if exported_from:
        assert str(reference["checkpoint_sha256"]) == exported_from, (
            f"the reference was made from {reference['checkpoint']}, not the committed model's checkpoint: "
            "re-run python -m inference.training.gradcam_reference"
        )
    assert ex.cam_weights_digest(classifier.cam_weights) == reference["fc_weight_sha256"], (
        f"the reference was made from {reference['checkpoint']}, not the committed model's checkpoint: "
        "re-run python -m inference.training.gradcam_reference"
    )
    # An int8 model's features are quantised: then the maps must agree in shape (correlation),
    # for the classes that matter (the three the torch model ranks highest), not to 1e-3.
    int8 = classifier.metadata.get("quantisation", {}).get("kept") == "int8"
    for i, image in enumerate(reference["images"]):
        x = ex._model_input(np.asarray(prepare_image(Image.fromarray(image), classifier.input_size))[None], classifier)
        # The torch reference is one view; the portal's test-time views are checked in test_classifier.
        _, logits, features = classifier.predict_arrays(x, tta=False)
        np.testing.assert_allclose(logits[0], reference["logits"][i], atol=0.15 if int8 else 2e-3)
        ranked = np.argsort(-reference["logits"][i])
        for c in ranked[:3] if int8 else ranked:
            ours = ex.normalise_heatmap(ex.cam_from_features(features[0], classifier.cam_weights, c))
            expected = reference["gradcam"][i, c]
            assert ours.shape == expected.shape
            if int8:
                assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] > 0.98, f"image {i} class {c}"
            else:
                np.testing.assert_allclose(ours, expected, atol=1e-3, err_msg=f"image {i} class {c}")
        top = ex.compute_cam(classifier, Image.fromarray(image))
        np.testing.assert_allclose(top.heatmap, reference["gradcam"][i, top.class_index], atol=0.05 if int8 else 1e-3)
        if "gradcam_risk" in reference and not int8:
            # The risk CAM of the single view equals torch autograd Grad-CAM of P(mel)+P(bcc)+P(akiec).
            from inference.classifier import softmax

            probabilities = softmax(logits, classifier.temperature)[0]
            risk_cam = ex.cam_for_prediction(classifier, probabilities, features[0], ex.RISK)
            assert risk_cam.class_name == ex.RISK_NAME
            np.testing.assert_allclose(risk_cam.heatmap, reference["gradcam_risk"][i], atol=2e-3, err_msg=f"image {i}")


def test_live_torch_gradcam_equals_numpy_cam(reference):
    torch = pytest.importorskip("torch")
    from inference.preprocessing import to_model_input
    from inference.training.gradcam_reference import gradcam
    from inference.training.network import EfficientNetLite0

    torch.manual_seed(0)
    model = EfficientNetLite0(num_classes=7).eval()
    x = torch.from_numpy(to_model_input([Image.fromarray(reference["images"][0])], reference["input_size"]))
    with torch.no_grad():
        _, fmap = model(x)
    weight = model._fc.weight.detach().numpy()
    lit = 0
    for c in range(7):
        expected = gradcam(model, x, c)
        ours = ex.normalise_heatmap(ex.cam_from_features(fmap[0].numpy(), weight, c))
        # A random head can leave a class's map all negative: then both are zero after the ReLU.
        lit += int(expected.max() > 0)
        np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert lit >= 2


# -------------------------------------------------------------------------------- overlays


def test_turbo_colour_map_runs_blue_to_red():
    lut = ex.TURBO_LUT
    assert lut.shape == (256, 3)
    assert lut.dtype == np.uint8
    assert lut[0, 2] > lut[0, 0]  # cold end is blue-violet
    assert lut[255, 0] > 100
    assert lut[255, 0] > 4 * lut[255, 2]
    assert lut[128, 1] > 200  # the middle is green-yellow


def test_turbo_matches_matplotlib():
    matplotlib = pytest.importorskip("matplotlib")
    x = np.linspace(0, 1, 64)
    np.testing.assert_allclose(ex.turbo(x), matplotlib.colormaps["turbo"](x)[:, :3], atol=0.035)


def test_overlay_has_photo_size_and_blends_by_opacity():
    image = photo(size=(120, 90))
    heat = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    out = ex.overlay(image, heat, opacity=0.4)
    assert out.mode == "RGB"
    assert out.size == (120, 90)
    assert np.array_equal(np.asarray(ex.overlay(image, heat, opacity=0.0)), np.asarray(image))
    full = np.asarray(ex.overlay(image, heat, opacity=1.0))
    assert np.array_equal(full, ex.colorize(ex.upsample(heat, (120, 90))))
    with pytest.raises(ValueError, match="opacity"):
        ex.overlay(image, heat, opacity=1.5)


def test_overlay_follows_exif_orientation():
    image = photo(size=(120, 90))
    image.getexif()[0x0112] = 6  # EXIF orientation: rotate 90 degrees to display
    out = ex.overlay(image, np.ones((2, 2), np.float32))
    assert out.size == (90, 120)


def test_heatmap_rgba_alpha_follows_heat():
    heat = np.array([[0.0, 1.0]], np.float32)
    layer = ex.heatmap_rgba(heat, (2, 1))
    assert layer.mode == "RGBA"
    assert layer.size == (2, 1)
    alpha = np.asarray(layer)[..., 3]
    assert alpha[0, 0] == 0
    assert alpha[0, 1] == 255
    assert np.asarray(ex.heatmap_rgba(heat, (2, 1), alpha_floor=1.0))[..., 3].min() == 255
    png = ex.png_bytes(ex.heatmap_rgba(heat, (40, 30)))
    assert png.startswith(b"\x89PNG")
    assert Image.open(__import__("io").BytesIO(png)).mode == "RGBA"


# ------------------------------------------------------------------------------------ LIME


def test_segments_are_contiguous_from_zero():
    pixels = np.asarray(prepare_image(photo(), 64))
    segments = ex.segment(pixels, ex.LimeSettings(n_segments=30))
    assert segments.shape == (64, 64)
    assert np.array_equal(np.unique(segments), np.arange(segments.max() + 1))
    assert 10 <= segments.max() + 1 <= 45


@pytest.mark.parametrize("direct", [True, False], ids=["model-input batches", "uint8 batches"])
def test_vectorised_perturbations_equal_limes_own_loop(direct):
    pixels = np.asarray(prepare_image(photo(), 64))
    segments = ex.segment(pixels, QUICK)
    fudged = np.zeros_like(pixels)
    fn = ex.probability_fn(ToyClassifier())
    calls = []

    def uint8_only(images):
        calls.append(images.shape)
        return fn(images)

    ours = fn if direct else uint8_only
    data_a, labels_a = LimeImageExplainer(random_state=7).data_labels(pixels, fudged, segments, fn, 40, batch_size=10)
    data_b, labels_b = ex.VectorisedLimeImageExplainer(random_state=7).data_labels(
        pixels, fudged, segments, ours, 40, batch_size=16
    )
    assert np.array_equal(data_a, data_b)
    np.testing.assert_allclose(labels_a, labels_b, rtol=1e-4, atol=2e-5)  # float32 summation order
    assert calls == ([] if direct else [(16, 64, 64, 3), (16, 64, 64, 3), (8, 64, 64, 3)])


def test_antithetic_sampling_pairs_each_draw_with_its_complement():
    pixels = np.asarray(prepare_image(photo(), 64))
    segments = ex.segment(pixels, QUICK)
    explainer = ex.VectorisedLimeImageExplainer(random_state=3)
    explainer.antithetic = True
    data, labels = explainer.data_labels(
        pixels, np.zeros_like(pixels), segments, ex.probability_fn(ToyClassifier()), 41
    )
    assert data.shape == (41, segments.max() + 1)
    assert labels.shape == (41, len(CLASSES))
    assert data[0].all()
    assert not data[1].any()
    assert np.array_equal(data[1::2], 1 - data[0:40:2])
    assert 0.3 < data[2::2].mean() < 0.7  # the draws themselves are still lime's coin flips
    with pytest.raises(ValueError, match="sampling"):
        ex.explain_lime(ToyClassifier(), photo(), settings=ex.LimeSettings(sampling="sobol"))


def test_lime_is_deterministic_under_a_seed():
    clf = ToyClassifier()
    a = ex.explain_lime(clf, photo(), settings=QUICK)
    b = ex.explain_lime(clf, photo(), settings=QUICK)
    c = ex.explain_lime(clf, photo(), settings=ex.LimeSettings(**{**QUICK.__dict__, "seed": 1}))
    assert np.array_equal(a.segments, b.segments)
    assert np.array_equal(a.weights, b.weights)
    assert a.to_dict() == b.to_dict()
    assert not np.array_equal(a.weights, c.weights)  # the seed is really used


def test_lime_finds_the_region_the_class_depends_on():
    """Class 1 of the toy grows with texture in the top-left quarter: the superpixels LIME
    credits for class 1 must lie there, and the ones elsewhere must be weak."""
    clf = ToyClassifier()
    settings = ex.LimeSettings(n_segments=30, num_samples=300)
    e = ex.explain_lime(clf, photo(), class_index=1, settings=settings)
    assert e.class_index == 1
    assert e.class_name == "bcc"
    rows, cols = np.indices(e.segments.shape)
    in_quarter = np.array(
        [np.mean((rows[e.segments == s] < 32) & (cols[e.segments == s] < 32)) for s in range(len(e.weights))]
    )
    top = e.top_positive
    assert len(top) == 5
    assert all(in_quarter[s] > 0.5 for s in top), (top, in_quarter[top])
    outside = np.abs(e.weights[in_quarter == 0])
    assert outside.max() < 0.5 * e.weights[top[0]]


def test_lime_explanation_contents_and_params(classifier):
    image = photo(size=(200, 150))
    e = ex.explain_lime(classifier, image, settings=QUICK)
    # LIME explains the single view (its perturbed images skip test-time augmentation).
    probs = classifier.predict_arrays(classifier.preprocess([image]), tta=False)[0][0]
    assert e.class_index == int(np.argmax(probs))
    assert e.probability == pytest.approx(float(probs[e.class_index]), abs=1e-5)
    width, height = classifier.input_wh
    assert e.segments.shape == (height, width)
    assert e.weights.shape == (e.segments.max() + 1,)
    assert all(e.weights[s] > 0 for s in e.top_positive)
    assert all(e.weights[s] < 0 for s in e.top_negative)
    assert set(e.top_positive).isdisjoint(e.top_negative)
    params = e.params
    assert params["segmentation"] == "slic"
    assert params["num_samples"] == QUICK.num_samples
    assert params["seed"] == 0
    assert params["class_name"] == classifier.classes[e.class_index]
    assert params["n_segments"] == QUICK.n_segments
    assert params["compactness"] == QUICK.compactness
    again = ex.explain_lime(classifier, image, settings=QUICK)
    assert np.array_equal(e.weights, again.weights)


def test_lime_explains_the_malignancy_risk(classifier):
    """The risk is explained as one more output column: P(mel) + P(bcc) + P(akiec)."""
    image = photo(size=(200, 150))
    e = ex.explain_lime(classifier, image, class_index=ex.RISK, settings=QUICK)
    probs = classifier.predict_arrays(classifier.preprocess([image]), tta=False)[0][0]
    assert e.class_name == ex.RISK_NAME
    assert e.class_index == -1
    assert e.params["class_name"] == ex.RISK_NAME
    assert e.probability == pytest.approx(float(probs[classifier.malignant_indices].sum()), abs=1e-5)
    top_class = ex.explain_lime(classifier, image, settings=QUICK)
    assert not np.array_equal(e.weights, top_class.weights)


def test_lime_render_tints_top_superpixels():
    clf = ToyClassifier()
    image = photo(size=(96, 72))
    e = ex.explain_lime(clf, image, class_index=1, settings=ex.LimeSettings(n_segments=30, num_samples=300))
    out = e.render(image, k=3, opacity=0.6)
    assert out.mode == "RGB"
    assert out.size == image.size
    segments = e.segments_at(image.size)
    diff = np.asarray(out, np.int16) - np.asarray(image, np.int16)
    green = np.isin(segments, e.top_segments(3, positive=True))
    red = np.isin(segments, e.top_segments(3, positive=False))
    assert diff[green][:, 1].mean() > 20 > diff[green][:, 0].mean()  # pushed towards green
    assert diff[red][:, 0].mean() > 20 > diff[red][:, 1].mean()  # pushed towards red
    untouched = ~(green | red)
    assert np.array_equal(np.asarray(out)[untouched], np.asarray(image)[untouched])
    small = e.render()  # over the explained (squashed) image
    assert small.size == (clf.input_size, clf.input_size)
