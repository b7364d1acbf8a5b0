"""The runtime classifier (inference.classifier): hash checks at load, probabilities, class order, CAM weights."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from inference import classifier as runtime
from inference.classifier import LesionClassifier, ModelLoadError, default_metadata_path, get_classifier
from tests.inference.helpers import CLASSES, copy_model, validation_images


@pytest.fixture(scope="module")
def clf() -> LesionClassifier:
    return LesionClassifier(default_metadata_path(), threads=1)


@pytest.fixture(scope="module")
def val_items():
    return validation_images(per_class=5)


@pytest.fixture
def model_copy(tmp_path):
    return copy_model(default_metadata_path(), tmp_path / "models")


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_metadata_describes_the_committed_files(clf):
    meta = json.loads(default_metadata_path().read_text())
    onnx_bytes = (default_metadata_path().parent / meta["onnx_file"]).read_bytes()
    assert clf.sha256 == meta["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert clf.classes == meta["classes"] == CLASSES
    size = meta["input_size"]
    assert clf.input_size == (size if isinstance(size, int) else tuple(size))
    assert clf.colour_constancy == (meta.get("colour_constancy") == "shades_of_gray")
    assert clf.temperature == pytest.approx(meta["temperature"])
    assert clf.temperature > 0
    assert 0 < clf.alert_threshold < 1
    assert clf.name == meta["name"]
    assert clf.version == meta["version"]
    assert clf.cam_weights.shape == (len(CLASSES), 1280)
    assert clf.cam_bias.shape == (len(CLASSES),)
    # The recorded alert threshold met the melanoma-sensitivity requirement on validation.
    assert meta["validation_metrics"]["melanoma_sensitivity"] >= 0.90


def test_untouched_copy_loads(model_copy):
    assert LesionClassifier(model_copy, threads=1).sha256 == json.loads(model_copy.read_text())["sha256"]


def test_tampered_model_is_refused(model_copy):
    onnx_path = model_copy.parent / "lesion_classifier.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"lesion_classifier\.onnx.*sha256"):
        LesionClassifier(model_copy, threads=1)


def test_tampered_cam_weights_are_refused(model_copy):
    cam_path = model_copy.parent / "lesion_classifier_cam.npy"
    np.save(cam_path, np.load(cam_path) * 2)
    with pytest.raises(ModelLoadError, match=r"lesion_classifier_cam\.npy"):
        LesionClassifier(model_copy, threads=1)


def test_metadata_hash_edit_is_refused(model_copy):
    meta = json.loads(model_copy.read_text())
    meta["sha256"] = "0" * 64
    model_copy.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="does not match"):
        LesionClassifier(model_copy, threads=1)


def test_missing_model_file_names_the_file(model_copy):
    (model_copy.parent / "lesion_classifier.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"lesion_classifier\.onnx is missing"):
        LesionClassifier(model_copy, threads=1)


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nowhere\.json is missing"):
        LesionClassifier(tmp_path / "nowhere.json")


def test_foreign_preprocessing_is_refused(model_copy):
    meta = json.loads(model_copy.read_text())
    meta["resize"] = "centre-crop"
    model_copy.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="centre-crop"):
        LesionClassifier(model_copy, threads=1)


def test_predict_gives_calibrated_probabilities_in_metadata_class_order(clf, val_items):
    images = [_open(data) for _, _, data in val_items]
    probs = clf.predict(images)
    assert probs.shape == (len(images), len(clf.classes))
    assert probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # predict() = softmax(logits / T) of the raw model output.
    again, logits, features = clf.predict_arrays(clf.preprocess(images))
    np.testing.assert_allclose(again, probs, atol=1e-6)
    z = logits / clf.temperature
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert not np.allclose(probs, runtime.softmax(logits, 1.0), atol=1e-3)  # the temperature is applied

    # The CAM weights are the model's own last layer: logits = W @ mean(features) + b (one view).
    _, single_logits, features = clf.predict_arrays(clf.preprocess(images), tta=False)
    assert features.shape == (len(images), *clf.metadata["outputs"]["features"][1:])
    np.testing.assert_allclose(features.mean(axis=(2, 3)) @ clf.cam_weights.T + clf.cam_bias, single_logits, atol=1e-3)

    # Columns follow the metadata's class order: on real validation images (5 per class) most
    # labels are recovered; a permuted order would score near chance (1/7).
    labels = np.array([clf.classes.index(dx) for _, dx, _ in val_items])
    assert (probs.argmax(axis=1) == labels).mean() >= 0.5


def test_batch_and_single_predictions_agree(clf, val_items):
    images = [_open(data) for _, _, data in val_items[:4]]
    batch = clf.predict(images)
    single = np.concatenate([clf.predict([im]) for im in images])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert clf.predict([]).shape == (0, len(clf.classes))


def test_predict_arrays_rejects_wrong_shape(clf):
    width, height = clf.input_wh
    with pytest.raises(ValueError, match=f"3 x {height} x {width}"):
        clf.predict_arrays(np.zeros((1, 3, 224, 224), dtype=np.float32))


def test_malignancy_risk(clf):
    probs = np.zeros((3, len(clf.classes)), dtype=np.float32)
    probs[0, clf.classes.index("nv")] = 1.0
    probs[1, clf.classes.index("mel")] = 0.5
    probs[1, clf.classes.index("bcc")] = 0.2
    probs[1, clf.classes.index("nv")] = 0.3
    probs[2, clf.classes.index("akiec")] = 0.05
    probs[2, clf.classes.index("bkl")] = 0.95
    np.testing.assert_allclose(clf.malignancy_risk(probs), [0.0, 0.7, 0.05], atol=1e-7)


def test_get_classifier_loads_once_per_model_folder(monkeypatch, model_copy):
    monkeypatch.setenv("DERMATRACK_ORT_THREADS", "1")
    get_classifier.cache_clear()
    try:
        first = get_classifier(model_copy.parent)
        assert first.metadata_path == model_copy
        assert first.threads == 1
        assert get_classifier(model_copy.parent) is first
        assert runtime.model_info(model_copy.parent)["version"] == first.version
        assert runtime.model_info(model_copy.parent / "missing") is None
    finally:
        get_classifier.cache_clear()


def test_bad_thread_setting_is_reported(monkeypatch):
    monkeypatch.setenv("DERMATRACK_ORT_THREADS", "many")
    with pytest.raises(ModelLoadError, match="DERMATRACK_ORT_THREADS"):
        LesionClassifier(default_metadata_path())


def test_test_time_augmentation_averages_the_flipped_views(clf, val_items):
    """The portal's logits are the mean of the single-view logits of the flipped images."""
    if clf.tta == "none":
        pytest.skip("the committed model runs one view")
    x = clf.preprocess([_open(data) for _, _, data in val_items[:3]])
    _, mean_logits, features = clf.predict_arrays(x)
    views = [x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]]
    expected = np.mean([clf.predict_arrays(np.ascontiguousarray(v), tta=False)[1] for v in views], axis=0)
    np.testing.assert_allclose(mean_logits, expected, atol=1e-4)
    _, _, single_features = clf.predict_arrays(x, tta=False)
    np.testing.assert_allclose(features, single_features, atol=1e-5)  # CAMs come from the unflipped view
