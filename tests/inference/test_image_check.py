"""The image check (inference.image_check): each reason triggers on a constructed example, normal
images pass, and statistics fitted for another model file are never used."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from inference import image_check
from inference.classifier import LesionClassifier, default_metadata_path
from inference.image_check import FeatureStats, ImageChecker, fit_feature_stats, heuristic_margins, image_scores
from inference.shifts import blur, brightness
from tests.inference.helpers import copy_model


@pytest.fixture(scope="module")
def clf() -> LesionClassifier:
    return LesionClassifier(default_metadata_path(), threads=1)


@pytest.fixture(scope="module")
def checker(clf) -> ImageChecker:
    return ImageChecker(clf)


@pytest.fixture
def skin() -> Image.Image:
    """A dermoscopy-like close-up: textured skin tone with a brown lesion (no data set needed)."""
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal([200, 150, 130], 25, (150, 200, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").filter(ImageFilter.GaussianBlur(1.0))
    ImageDraw.Draw(image).ellipse((70, 45, 130, 105), fill=(110, 70, 50))
    return image.filter(ImageFilter.GaussianBlur(0.7))


@pytest.fixture(scope="module")
def val_images():
    """Twelve real validation images (skipped locally without the data set, a failure in CI)."""
    from inference.evaluation import read_images, read_metadata_rows
    from tests.conftest import require_data_set

    data_dir = require_data_set()
    rows = sorted(read_metadata_rows(data_dir, "val"), key=lambda r: r["image_id"])[::107]
    blobs = read_images(data_dir, [r["image_id"] for r in rows])
    return [Image.open(io.BytesIO(blobs[r["image_id"]])) for r in rows]


def _codes(image: Image.Image) -> set[str]:
    return {code for code, margin in heuristic_margins(image_scores(image)).items() if margin >= 0}


def test_a_skin_close_up_passes_the_heuristics(skin):
    assert _codes(skin) == set()


def test_too_dark(skin):
    assert "too_dark" in _codes(brightness(skin, 0.15))


def test_overexposed(skin):
    assert "overexposed" in _codes(brightness(skin, 3.0))


def test_blurred(skin):
    assert _codes(blur(skin, 4.0)) == {"blurred"}


def test_a_document_is_not_dermoscopic():
    page = Image.new("RGB", (600, 800), (250, 248, 240))
    draw = ImageDraw.Draw(page)
    for y in range(40, 780, 16):
        draw.text((30, y), "Referral letter: follow-up of the lesion on the left shoulder " * 2, fill=(0, 0, 0))
    assert "not_dermoscopic" in _codes(page)


def test_a_greyscale_photograph_is_not_dermoscopic(skin):
    assert "not_dermoscopic" in _codes(skin.convert("L"))


def test_real_validation_images_pass(checker, val_images):
    assert checker.model_checks_used, checker.notes
    results = checker.check_batch(val_images)
    assert all(r.assessable for r in results), [r.to_dict() for r in results if not r.assessable]
    assert all(r.score < 0 for r in results)


def test_features_far_from_the_training_data_are_out_of_distribution(checker, clf, skin):
    _, logits, features = clf.predict_arrays(clf.preprocess([skin]))
    assert "out_of_distribution" not in checker.check(skin, logits[0], features[0]).codes
    far = features[0] + 25.0 * np.random.default_rng(1).standard_normal(features[0].shape).astype(np.float32)
    result = checker.check(skin, logits[0], far)
    assert not result.assessable
    assert result.codes == ["out_of_distribution"]
    assert result.reasons[0].message.startswith("The image is unlike")
    assert any(result.scores[k] > checker.thresholds[k] for k in ("mahalanobis", "pca_residual"))


def test_check_runs_the_model_itself_with_the_same_result(checker, clf, skin):
    _, logits, features = clf.predict_arrays(clf.preprocess([skin]))
    given, own = checker.check(skin, logits[0], features[0]), checker.check(skin)
    assert given.scores == pytest.approx(own.scores)
    assert json.loads(json.dumps(own.to_dict()))["assessable"] is own.assessable


def test_committed_statistics_belong_to_the_committed_model(clf):
    meta = json.loads((default_metadata_path().parent / image_check.STATS_FILE).read_text())
    assert meta["model_sha256"] == clf.sha256
    arrays = default_metadata_path().parent / meta["arrays_file"]
    assert arrays.suffix == ".npy"
    assert arrays.stat().st_size < 1_000_000
    assert meta["calibrated_on"]["refuse_rate"] <= 0.02


@pytest.fixture
def model_copy(tmp_path):
    metadata = copy_model(default_metadata_path(), tmp_path / "models")
    for name in (image_check.STATS_FILE, "image_check.npy"):
        shutil.copyfile(default_metadata_path().parent / name, metadata.parent / name)
    return metadata


def test_statistics_of_another_model_fall_back_to_heuristics(model_copy, skin):
    stats = model_copy.parent / image_check.STATS_FILE
    meta = json.loads(stats.read_text())
    assert ImageChecker(LesionClassifier(model_copy, threads=1)).model_checks_used
    meta["model_sha256"] = "0" * 64
    stats.write_text(json.dumps(meta))
    checker = ImageChecker(LesionClassifier(model_copy, threads=1))
    assert not checker.model_checks_used
    result = checker.check(skin)
    assert result.assessable
    assert not result.model_checks_used
    assert "mahalanobis" not in result.scores
    assert any("fitted for model sha256 000000000000" in n for n in result.notes)
    assert "too_dark" in checker.check(brightness(skin, 0.1)).codes  # the heuristics still run


def test_tampered_or_missing_arrays_fall_back(model_copy):
    arrays = model_copy.parent / "image_check.npy"
    np.save(arrays, np.zeros((3, 3), dtype=np.float32), allow_pickle=False)
    checker = ImageChecker(LesionClassifier(model_copy, threads=1))
    assert not checker.model_checks_used
    assert "does not match its sha256" in checker.notes[0]
    arrays.unlink()
    assert not ImageChecker(LesionClassifier(model_copy, threads=1)).model_checks_used
    (model_copy.parent / image_check.STATS_FILE).unlink()
    assert "no fitted statistics" in ImageChecker(LesionClassifier(model_copy, threads=1)).notes[0]


def test_fitted_mahalanobis_ranks_far_points_higher_and_round_trips():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 200)
    centres = rng.normal(0, 3, (3, 40))
    x = centres[labels] + rng.normal(0, 1, (600, 40))
    stats = fit_feature_stats(x, labels, components=8)
    near = stats.distance(centres + rng.normal(0, 1, (3, 40)))
    far = stats.distance(centres + 10 * rng.normal(0, 1, (3, 40)))
    assert near.max() < far.min()
    assert np.median(stats.distance(x)) == pytest.approx(8, rel=0.3)  # ~ chi-squared with k dof
    # A large step in a random direction (mostly outside the 8-d PCA space) raises the residual.
    off = np.linalg.svd(rng.normal(0, 1, (40, 40)))[0][:, 0] * 20
    assert (stats.residual(x[:50] + off) > stats.residual(x[:50]).max()).all()
    copy = FeatureStats.from_array(stats.to_array(), 8, 3)
    assert np.allclose(copy.distance(x[:5]), stats.distance(x[:5]), rtol=1e-4)
    assert np.allclose(copy.residual(x[:5]), stats.residual(x[:5]), rtol=1e-4)
    with pytest.raises(image_check.ImageCheckStatsError):
        FeatureStats.from_array(stats.to_array(), 9, 3)


def test_not_an_image_is_a_clear_error(checker):
    with pytest.raises(TypeError, match="PIL image"):
        checker.check(np.zeros((10, 10, 3)))
