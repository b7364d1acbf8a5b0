"""seed_demo on a bare clone (no ../shared data set): synthetic lesion images, labelled."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from lesions.models import Examination
from patients.models import Patient
from patients.selectors import patient_search_for
from portal.models import User
from portal.web.management.commands.seed_demo import EXAMINATIONS_PER_LESION, synthetic_lesion_image


def test_synthetic_images_are_deterministic_and_lesion_like():
    a, b = synthetic_lesion_image(seed=7, kind="mel"), synthetic_lesion_image(seed=7, kind="mel")
    assert a == b
    assert synthetic_lesion_image(seed=8, kind="mel") != a
    pixels = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=float)
    assert pixels.shape == (450, 600, 3)
    centre = pixels[175:275, 250:350].mean()
    edge = pixels[200:250, 60:110].mean()  # skin, inside the vignette
    assert centre < edge - 40, "the pigmented blob is not darker than the skin around it"
    red, green, blue = pixels[200:250, 60:110].mean(axis=(0, 1))
    assert red > green > blue, "the background is not skin-toned"


def test_seed_demo_without_the_data_set_uses_labelled_synthetic_images(
    db, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):  # no broker: nothing is queued
        out = io.StringIO()
        call_command("seed_demo", data_dir=tmp_path / "missing", stdout=out)
    text = out.getvalue()
    exams = Examination.objects.all()
    lesions = {e.lesion_id for e in exams}
    assert len(lesions) == 4
    assert exams.count() == 4 * EXAMINATIONS_PER_LESION  # a progress chart's worth per lesion
    assert all(e.synthetic for e in exams)
    assert len({e.image_sha256 for e in exams}) == exams.count()
    assert "synthetic" in text
    assert "(the demo patient Maria Gruber, record DT-1001)" in text
    # Registered through the service: searchable, with their risk factors.
    staff = User.objects.get(username="staff")
    assert [p.medical_record_number for p in patient_search_for(user=staff, query="grub").patients] == ["DT-1001"]
    maria = patient_search_for(user=staff, query="1961-03-14").patients[0]
    assert (maria.family_name, Patient.objects.get(pk=maria.pk).fitzpatrick_skin_type) == ("Gruber", "II")
    # Idempotent: a second run adds nothing.
    with django_capture_on_commit_callbacks(execute=False):
        call_command("seed_demo", data_dir=tmp_path / "missing", stdout=io.StringIO())
    assert Examination.objects.count() == exams.count()


@pytest.mark.parametrize("template", ["lesions/partials/synthetic_label.html"])
def test_the_label_shows_only_for_synthetic_examinations(template):
    from django.template.loader import render_to_string

    assert "Synthetic demo image" in render_to_string(template, {"exam": Examination(synthetic=True)})
    assert render_to_string(template, {"exam": Examination(synthetic=False)}).strip() == ""


def test_real_images_are_used_when_the_data_set_is_there(tmp_path):
    from portal.web.management.commands.seed_demo import _demo_images

    assert _demo_images(tmp_path) == {}
    assert _demo_images(Path("/nonexistent")) == {}
