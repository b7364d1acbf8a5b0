"""The evaluation path (inference.evaluation, `evaluate_model`) against the portal's path, on real images."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from inference import evaluation
from inference.classifier import LesionClassifier, default_metadata_path, get_classifier
from tests.inference.helpers import CLASSES, validation_images, write_folder


@pytest.fixture(scope="module")
def clf() -> LesionClassifier:
    return LesionClassifier(default_metadata_path(), threads=1)


@pytest.fixture(scope="module")
def items():
    return validation_images(per_class=2)  # 14 real validation images, 2 per class


@pytest.fixture
def folder(tmp_path, items):
    return write_folder(tmp_path / "data", items)


def portal_open(data: bytes) -> Image.Image:
    """What lesions.classification does with a stored upload."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    image = portal_open(data)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()


def test_evaluation_and_portal_preprocess_identically(clf, items):
    blobs = [data for _, _, data in items[:3]]
    rotated = with_exif_orientation(blobs[0], 6)  # "rotate 90 degrees clockwise to display"
    for data in [*blobs, rotated]:
        eval_input = evaluation.images_to_input([data], clf)
        portal_input = clf.preprocess([portal_open(data)])
        assert eval_input.dtype == np.float32
        assert eval_input.shape == (1, 3, clf.input_wh[1], clf.input_wh[0])
        np.testing.assert_array_equal(eval_input, portal_input)

    # The EXIF orientation is applied, not ignored: the result is that of the upright image.
    stored_pixels = np.asarray(portal_open(rotated))  # pixels as stored, without the EXIF tag
    upright = Image.fromarray(np.ascontiguousarray(np.rot90(stored_pixels, k=-1)))  # turned 90 degrees clockwise
    as_stored = Image.fromarray(stored_pixels)
    exif_input = evaluation.images_to_input([rotated], clf)
    np.testing.assert_array_equal(exif_input, clf.preprocess([upright]))
    assert np.abs(exif_input - clf.preprocess([as_stored])).max() > 0.1


def test_evaluate_reports_consistent_metrics(clf, folder, items):
    metrics, image_ids, probs = evaluation.evaluate(folder, classifier=clf, batch_size=5)
    assert image_ids == [image_id for image_id, _, _ in items]
    assert probs.shape == (len(items), len(CLASSES))

    # Same probabilities as the portal's path on the same bytes.
    direct = clf.predict([portal_open(data) for _, _, data in items])
    np.testing.assert_allclose(probs, direct, atol=1e-6)

    labels = np.array([CLASSES.index(dx) for _, dx, _ in items])
    predicted = probs.argmax(axis=1)
    matrix = np.array(metrics["confusion_matrix"])
    assert metrics["n"] == len(items) == matrix.sum()
    np.testing.assert_array_equal(matrix.sum(axis=1), [2] * len(CLASSES))
    np.testing.assert_array_equal(
        np.diag(matrix), [((labels == c) & (predicted == c)).sum() for c in range(len(CLASSES))]
    )
    assert metrics["accuracy"] == pytest.approx((predicted == labels).mean())
    recalls = [metrics["per_class"][c]["recall"] for c in CLASSES]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls))

    risk = clf.malignancy_risk(probs)
    is_mel = labels == CLASSES.index("mel")
    assert metrics["threshold"] == clf.alert_threshold
    assert metrics["melanoma_sensitivity"] == pytest.approx((risk[is_mel] >= clf.alert_threshold).mean())
    assert metrics["melanoma_specificity"] == pytest.approx((risk[~is_mel] < clf.alert_threshold).mean())
    assert 0.0 <= metrics["malignant_auc"] <= 1.0
    assert metrics["model"]["sha256"] == clf.sha256


def test_split_selects_rows(clf, tmp_path, items):
    splits = ["val" if i % 2 == 0 else "train" for i in range(len(items))]
    folder = write_folder(tmp_path / "split", items, splits)
    metrics, image_ids, _ = evaluation.evaluate(folder, split="val", classifier=clf)
    assert image_ids == [items[i][0] for i in range(0, len(items), 2)]
    assert metrics["n"] == len(image_ids)
    with pytest.raises(evaluation.EvaluationDataError, match="no rows with split == 'test'"):
        evaluation.evaluate(folder, split="test", classifier=clf)


def test_split_without_split_column_is_an_error(clf, folder):
    with pytest.raises(evaluation.EvaluationDataError, match="no 'split' column"):
        evaluation.evaluate(folder, split="val", classifier=clf)


def test_unknown_label_and_missing_image_are_errors(clf, tmp_path, items):
    bad_label = write_folder(tmp_path / "label", [(items[0][0], "scc", items[0][2])])
    with pytest.raises(evaluation.EvaluationDataError, match="scc"):
        evaluation.evaluate(bad_label, classifier=clf)
    missing = write_folder(tmp_path / "missing", items[:2])
    with open(missing / "metadata.csv", "a", newline="") as fh:
        fh.write("ISIC_9999999,nv\n")
    with pytest.raises(evaluation.EvaluationDataError, match="ISIC_9999999"):
        evaluation.evaluate(missing, classifier=clf)


def test_predictions_csv_columns(tmp_path, clf, folder, items):
    _, image_ids, probs = evaluation.evaluate(folder, classifier=clf)
    out = tmp_path / "predictions.csv"
    evaluation.write_predictions_csv(out, image_ids, probs, clf.classes)
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image_id", *CLASSES]
    assert [r[0] for r in rows[1:]] == image_ids
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in rows[1:]]), probs, atol=1e-6)


def test_format_report_lists_every_figure(clf, folder):
    metrics, _, _ = evaluation.evaluate(folder, classifier=clf)
    report = evaluation.format_report(metrics)
    for label in (
        "n ",
        "accuracy",
        "balanced accuracy",
        "macro F1",
        "malignant ROC AUC",
        "melanoma sensitivity",
        "melanoma specificity",
        "ECE",
        "confusion matrix",
    ):
        assert label in report
    for c in CLASSES:
        assert f"\n{c} " in report
    assert f"{metrics['balanced_accuracy']:.3f}" in report
    # The confusion-matrix row of each class is printed with its counts.
    nv_row = [line for line in report.splitlines() if line.startswith("nv ")][-1]
    assert [int(v) for v in nv_row.split()[1:]] == metrics["confusion_matrix"][CLASSES.index("nv")]


def test_command_line_writes_json_and_csv(tmp_path, items, monkeypatch, capsys):
    # A folder without any df image: its recall is undefined and must come out as JSON null, not NaN.
    subset = [it for it in items if it[1] != "df"]
    folder = write_folder(tmp_path / "nodf", subset)
    monkeypatch.setenv("DERMATRACK_ORT_THREADS", "1")
    get_classifier.cache_clear()
    try:
        code = evaluation.main(
            [str(folder), "--json", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.csv")]
        )
    finally:
        get_classifier.cache_clear()
    assert code == 0
    assert "balanced accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert metrics["n"] == len(subset)
    assert metrics["per_class"]["df"]["recall"] is None
    assert len((tmp_path / "p.csv").read_text().splitlines()) == len(subset) + 1


def test_command_line_split_error_exits_cleanly(folder, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluation.main([str(folder), "--split", "val"])
    assert exc.value.code == 2
    assert "no 'split' column" in capsys.readouterr().err


def test_management_command(tmp_path, folder, monkeypatch):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    monkeypatch.setenv("DERMATRACK_ORT_THREADS", "1")
    get_classifier.cache_clear()
    out = io.StringIO()
    try:
        call_command("evaluate_model", str(folder), "--predictions", str(tmp_path / "p.csv"), stdout=out)
        with pytest.raises(CommandError, match="no 'split' column"):
            call_command("evaluate_model", str(folder), "--split", "val", stdout=io.StringIO())
    finally:
        get_classifier.cache_clear()
    assert "balanced accuracy" in out.getvalue()
    assert (tmp_path / "p.csv").read_text().startswith("image_id,akiec,bcc,bkl,df,mel,nv,vasc")
