"""Issue 13: a held image (another patient's record number in it) moved to the patient it belongs
to — the service (where it goes, what comes with it, who may), and the two-step page (find the
patient by record number by POST, choose the lesion)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import reverse

from inference import ocr as text_reader
from lesions import ocr, risk
from lesions.models import Alert, AlertTrigger, Examination, Hold, Lesion, Visit
from lesions.selectors import latest_prediction
from lesions.services import examination_upload, visit_upload
from lesions.tasks import classify_examination_task
from portal.models import AuditEntry, Role
from tests.factories import LesionFactory, PatientFactory, UserFactory, lesion_jpeg_bytes


class LabelEngine:
    """Reads the same record number in every image."""

    def __init__(self, number: str) -> None:
        self.number = number

    def read(self, image):
        return text_reader.OcrResult(boxes=[text_reader.TextBox(text=self.number, score=0.9, box=(2, 2, 60, 14))])


@pytest.fixture
def owner(clinic):
    """The patient the image really belongs to."""
    return PatientFactory(clinic=clinic, medical_record_number="QH-4711", given_name="Anna", family_name="Huber")


@pytest.fixture
def held(monkeypatch, lesion, clinic_staff, owner):
    """An image uploaded on `lesion` (patient Zelda) with Anna's record number in it, classified."""
    monkeypatch.setattr(ocr, "engine", lambda: LabelEngine("QH 4711"))
    monkeypatch.setattr(risk, "is_alert", lambda value, threshold: True)  # any result would alert
    exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(lesion_jpeg_bytes()))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.hold == Hold.HELD
    assert not Alert.objects.exists()
    return exam


# --- the service -----------------------------------------------------------------------------


def test_moving_onto_a_lesion_of_the_other_patient_takes_image_results_and_capture_time(held, clinic_staff, owner):
    target = LesionFactory(patient=owner)
    old_visit, captured = held.visit, held.captured_at
    prediction_ids = set(held.predictions.values_list("pk", flat=True))
    moved = ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner, to_lesion=target)
    moved.refresh_from_db()
    assert moved.pk == held.pk
    assert moved.lesion == target
    assert moved.visit.lesion == target
    assert moved.visit.captured_at == captured == moved.captured_at
    assert moved.visit.recorded_by == old_visit.recorded_by
    assert moved.hold == Hold.CONFIRMED
    assert set(moved.predictions.values_list("pk", flat=True)) == prediction_ids
    assert latest_prediction(moved) is not None
    assert not Visit.objects.filter(pk=old_visit.pk).exists()  # it held only this image
    assert not Examination.objects.filter(lesion=held.lesion).exclude(pk=held.pk).exists()


def test_the_alert_rule_runs_on_the_new_lesion_and_never_on_the_old(held, clinic_staff, owner, lesion):
    target = LesionFactory(patient=owner)
    ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner, to_lesion=target)
    alert = Alert.objects.get()
    assert alert.lesion == target
    assert alert.status == Alert.Status.OPEN
    assert AlertTrigger.objects.get(alert=alert).prediction.examination_id == held.pk
    assert not Alert.objects.filter(lesion=lesion).exists()


def test_without_a_lesion_a_new_one_is_made_at_the_same_body_site(held, clinic_staff, owner):
    moved = ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner)
    new_lesion = Lesion.objects.get(patient=owner)
    assert moved.lesion == new_lesion
    assert new_lesion.body_site == held.lesion.body_site
    assert AuditEntry.objects.filter(action="lesion.create", patient_uuid=str(owner.uuid)).count() == 1


def test_both_records_audit_trails_say_where_the_image_went(held, clinic_staff, owner, patient):
    ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner)
    out = AuditEntry.objects.get(action="examination.hold_move_out")
    into = AuditEntry.objects.get(action="examination.hold_move_in")
    assert (out.patient_uuid, into.patient_uuid) == (str(patient.uuid), str(owner.uuid))
    assert out.target_uuid == into.target_uuid == str(held.uuid)
    assert out.actor == into.actor == clinic_staff


def test_the_other_images_of_the_visit_stay(monkeypatch, lesion, clinic_staff, owner):
    """Two images in one visit, only the first with Anna's label: the visit stays with the second."""
    engines = iter([LabelEngine("QH-4711"), LabelEngine("")])
    monkeypatch.setattr(ocr, "engine", lambda: next(engines))
    created, rejected = visit_upload(
        actor=clinic_staff,
        lesion=lesion,
        images=[(io.BytesIO(lesion_jpeg_bytes(seed=1)), None), (io.BytesIO(lesion_jpeg_bytes(seed=2)), None)],
    )
    assert not rejected
    for exam in created:
        classify_examination_task(exam.pk)
    first, second = (Examination.objects.get(pk=e.pk) for e in created)
    assert first.hold == Hold.HELD
    assert second.hold == Hold.NONE
    ocr.examination_hold_move(actor=clinic_staff, exam=first, to_patient=owner)
    second.refresh_from_db()
    assert Visit.objects.filter(pk=second.visit_id, lesion=lesion).exists()
    assert list(second.visit.examinations.all()) == [second]


def test_a_capture_date_before_the_other_patients_birth_is_refused_and_nothing_moves(
    held, clinic_staff, clinic, lesion
):
    """The image's visit was entered afterwards, dated 2020; the patient found was born in 2021."""
    Visit.objects.filter(pk=held.visit_id).update(captured_at=dt.datetime(2020, 3, 1, 10, tzinfo=dt.UTC))
    held.refresh_from_db()
    born_later = PatientFactory(clinic=clinic, date_of_birth=dt.date(2021, 6, 1))
    with pytest.raises(ValidationError, match="before the patient's date of birth"):
        ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=born_later)
    held.refresh_from_db()
    assert held.lesion == lesion
    assert held.hold == Hold.HELD
    assert not Lesion.objects.filter(patient=born_later).exists()  # the new lesion rolled back


def test_only_a_held_image_moves_and_not_onto_its_own_lesion(held, clinic_staff, owner, patient, lesion):
    with pytest.raises(ocr.CannotMove):
        ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=patient, to_lesion=lesion)
    with pytest.raises(ocr.CannotMove):  # a lesion of someone else than the chosen patient
        ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner, to_lesion=lesion)
    ocr.examination_hold_confirm(actor=clinic_staff, exam=held)
    held.refresh_from_db()
    with pytest.raises(ocr.CannotMove):
        ocr.examination_hold_move(actor=clinic_staff, exam=held, to_patient=owner)


def test_the_actor_must_manage_lesions_of_both_patients(held, other_clinic, owner, patient_user):
    elsewhere = PatientFactory(clinic=other_clinic)
    staff = UserFactory(role=Role.STAFF, clinic=held.lesion.patient.clinic)
    with pytest.raises(Http404):  # a record in a clinic the actor does not work in
        ocr.examination_hold_move(actor=staff, exam=held, to_patient=elsewhere)
    outside = UserFactory(role=Role.STAFF, clinic=other_clinic)
    with pytest.raises(Http404):  # manages the target's clinic, not the source's
        ocr.examination_hold_move(actor=outside, exam=held, to_patient=elsewhere)
    with pytest.raises(PermissionDenied):  # the patient sees their own record but changes nothing
        ocr.examination_hold_move(actor=patient_user, exam=held, to_patient=owner)
    held.refresh_from_db()
    assert held.hold == Hold.HELD
    assert not AuditEntry.objects.filter(action__startswith="examination.hold_move").exists()


# --- the page --------------------------------------------------------------------------------


def _move_url(exam) -> str:
    return reverse("lesions:examination-hold-move", args=[exam.uuid])


def test_the_move_journey_finds_by_record_number_and_moves(held, staff_client, owner):
    target = LesionFactory(patient=owner, label="left shin")
    detail = staff_client.get(reverse("lesions:examination-detail", args=[held.uuid]))
    assert _move_url(held).encode() in detail.content
    found = staff_client.post(_move_url(held), {"record_number": " qh-4711 "})
    assert found.status_code == 200
    html = found.content.decode()
    assert "Huber, Anna" in html
    assert "left shin" in html
    assert str(target.uuid) in html
    moved = staff_client.post(_move_url(held), {"patient": owner.uuid, "destination": target.uuid})
    assert moved.status_code == 302
    assert moved["Location"] == reverse("lesions:examination-detail", args=[held.uuid])
    assert "QH" not in moved["Location"]  # no record number in any URL
    page = staff_client.get(moved["Location"])
    assert b"moved to the other patient" in page.content
    assert b"Estimated malignancy risk" in page.content
    assert str(owner.uuid).encode() in page.content  # the crumbs lead to Anna's record now


def test_a_record_number_the_actor_cannot_manage_reads_as_not_found(held, staff_client, other_clinic):
    PatientFactory(clinic=other_clinic, medical_record_number="ZZ-9999")
    unknown = staff_client.post(_move_url(held), {"record_number": "ZZ-9999"})
    nowhere = staff_client.post(_move_url(held), {"record_number": "ZZ-0000"})
    assert unknown.status_code == nowhere.status_code == 400
    message = b"No patient whose lesions you manage has that record number."
    assert message in unknown.content
    assert message in nowhere.content


def test_the_patients_own_number_says_confirm_instead(held, staff_client, patient):
    response = staff_client.post(_move_url(held), {"record_number": patient.medical_record_number})
    assert response.status_code == 400
    assert b"this patient&#x27;s own record number" in response.content


def test_moving_to_a_hidden_patient_or_lesion_is_404_and_nothing_moves(held, staff_client, other_clinic, lesion):
    elsewhere = PatientFactory(clinic=other_clinic)
    hidden_lesion = LesionFactory(patient=elsewhere)
    assert staff_client.post(_move_url(held), {"patient": elsewhere.uuid, "destination": "new"}).status_code == 404
    assert (
        staff_client.post(_move_url(held), {"patient": elsewhere.uuid, "destination": hidden_lesion.uuid}).status_code
        == 404
    )
    held.refresh_from_db()
    assert held.lesion == lesion
    assert held.hold == Hold.HELD


def test_a_clinician_of_another_clinic_cannot_open_the_move_page(held, outside_client):
    assert outside_client.get(_move_url(held)).status_code == 404


def test_a_garbled_destination_is_a_form_error(held, staff_client, owner):
    response = staff_client.post(_move_url(held), {"patient": owner.uuid, "destination": "../../etc"})
    assert response.status_code == 400
    held.refresh_from_db()
    assert held.hold == Hold.HELD


def test_an_image_not_held_cannot_be_moved_from_the_page(held, staff_client, clinic_staff, owner):
    ocr.examination_hold_confirm(actor=clinic_staff, exam=held)
    response = staff_client.post(_move_url(held), {"patient": owner.uuid, "destination": "new"})
    assert response.status_code == 302
    held.refresh_from_db()
    assert held.hold == Hold.CONFIRMED
    assert not Lesion.objects.filter(patient=owner).exists()
