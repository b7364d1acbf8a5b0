"""DICOM: an examination exports as a valid Dermoscopic Photography object (dciodvfy), only to
clinicians who may see it, audited; uploaded dermoscopic / VL photographic DICOM files of the
right patient are accepted like a JPEG, anything else gets a clear 400 and stores nothing."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from lesions import dicom
from lesions.models import BodySite, Examination
from portal.models import AuditEntry
from tests.conftest import skip_or_fail
from tests.factories import ExaminationFactory, LesionFactory, PatientFactory, VisitFactory, png_bytes

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _pixels(width=160, height=120, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def _stored_array(exam: Examination) -> np.ndarray:
    with exam.image.open("rb") as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"))


def _dicom_upload(
    *,
    patient_id: str,
    sop_class: str = dicom.DERMOSCOPIC_PHOTOGRAPHY,
    pixels: np.ndarray | None = None,
    jpeg: bool = False,
    with_pixels: bool = True,
) -> bytes:
    """A DICOM file as a dermatoscope or PACS would send it."""
    pixels = _pixels() if pixels is None else pixels
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = patient_id
    ds.Modality = {CT_IMAGE_STORAGE: "CT", MR_IMAGE_STORAGE: "MR"}.get(sop_class, "XC")
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if with_pixels:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        if jpeg:
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="JPEG", quality=95)
            ds.PhotometricInterpretation = "YBR_FULL_422"
            ds.PixelData = encapsulate([out.getvalue()])
            ds.LossyImageCompression = "01"
        else:
            ds.PhotometricInterpretation = "RGB"
            ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _upload(client, lesion, data: bytes, name="image.dcm", content_type="application/dicom"):
    return client.post(
        f"/api/lesions/{lesion.uuid}/examinations/",
        {"image": SimpleUploadedFile(name, data, content_type=content_type)},
    )


def _assert_nothing_stored(settings):
    assert Examination.objects.count() == 0
    media = settings.MEDIA_ROOT
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


# --- Export ----------------------------------------------------------------------------------


@pytest.fixture
def forearm_exam(patient):
    lesion = LesionFactory(patient=patient, body_site=BodySite.LEFT_FOREARM)
    return ExaminationFactory(lesion=lesion, image=ContentFile(png_bytes(size=(160, 120), seed=3), name="x.png"))


def test_export_round_trip(clinician_client, forearm_exam, patient):
    response = clinician_client.get(f"/examinations/{forearm_exam.uuid}/dicom/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert "no-store" in response["Cache-Control"]
    disposition = response["Content-Disposition"]
    assert disposition == f'attachment; filename="examination-{forearm_exam.uuid.hex[:8]}.dcm"'
    for phi in (patient.family_name, patient.given_name, patient.medical_record_number):
        assert phi not in disposition

    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == dicom.DERMOSCOPIC_PHOTOGRAPHY == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == f"2.25.{forearm_exam.uuid.int}" == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.StudyInstanceUID == f"2.25.{forearm_exam.visit.uuid.int}"
    assert ds.PatientID == patient.medical_record_number
    assert ds.IssuerOfPatientID == patient.clinic.name
    assert ds.PatientName.family_name == patient.family_name
    assert ds.PatientName.given_name == patient.given_name
    assert ds.PatientBirthDate == patient.date_of_birth.strftime("%Y%m%d")
    assert ds.Modality == "DMS"
    assert ds.BurnedInAnnotation == "NO"
    region = ds.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning) == ("14975008", "SCT", "Forearm")
    assert ds.ImageLaterality == "L"
    assert ds.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(ds.pixel_array, _stored_array(forearm_exam))


def test_images_of_one_visit_are_one_study_and_series(clinician, patient):
    visit = VisitFactory(lesion=LesionFactory(patient=patient))
    first = ExaminationFactory(lesion=visit.lesion, visit=visit, captured_at=visit.captured_at)
    second = ExaminationFactory(lesion=visit.lesion, visit=visit, captured_at=visit.captured_at)
    from lesions.selectors import examination_dicom_for

    one = pydicom.dcmread(io.BytesIO(examination_dicom_for(user=clinician, examination_uuid=first.uuid)[0]))
    two = pydicom.dcmread(io.BytesIO(examination_dicom_for(user=clinician, examination_uuid=second.uuid)[0]))
    again = pydicom.dcmread(io.BytesIO(examination_dicom_for(user=clinician, examination_uuid=first.uuid)[0]))
    assert one.StudyInstanceUID == two.StudyInstanceUID
    assert one.SeriesInstanceUID == two.SeriesInstanceUID
    assert one.SOPInstanceUID != two.SOPInstanceUID
    assert (one.InstanceNumber, two.InstanceNumber) == (1, 2)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (one.SOPInstanceUID, one.SeriesInstanceUID)


def test_every_body_site_has_a_dicom_code_from_the_standard():
    from pydicom.sr._concepts_dict import concepts

    meanings = {code: meaning for entries in concepts["SCT"].values() for code, (meaning, _cids) in entries.items()}
    known: dict[str, set[str]] = {}
    for entries in concepts["SCT"].values():
        for code, (meaning, _cids) in entries.items():
            known.setdefault(code, set()).add(meaning)
    assert set(dicom.BODY_SITE_CODES) == set(BodySite.values)
    for site, (code, meaning) in dicom.BODY_SITE_CODES.items():
        assert code in meanings, site
        assert meaning in known[code], (site, code, known[code])


@pytest.mark.parametrize("site", list(BodySite.values))
def test_export_passes_dciodvfy(clinic, site, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        skip_or_fail("dciodvfy (Debian's dicom3tools) is not installed")
    # A name outside ASCII and with PN's separator characters in it: the character set and the
    # name's components must still be valid.
    patient = PatientFactory(clinic=clinic, given_name="Zoë Ann", family_name="Ångström^Núñez")
    exam = ExaminationFactory(lesion=LesionFactory(patient=patient, body_site=site))
    path = tmp_path / "exam.dcm"
    path.write_bytes(dicom.examination_dicom_bytes(exam=exam))
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    assert lines, "dciodvfy printed nothing"
    assert lines[0].strip() == "DermoscopicPhotographyImage", lines
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(lines)
    # The warnings: dicom3tools' General Series list of defined terms predates "DMS"; a paired
    # site whose side the portal does not record has an empty Laterality ("unknown").
    expected = ["Warning - Unrecognized defined term <DMS> for value 1 of attribute <Modality>"]
    if site in (BodySite.EAR, BodySite.BUTTOCKS):
        expected.append(
            "Warning - is only permitted to be empty when actually unknown; should be absent (not empty) "
            "if an unpaired body part, and have a value if a paired body part - attribute <Laterality>"
        )
    assert [line for line in lines if line.startswith("Warning")] == expected


def test_burned_in_annotation_is_set_when_the_image_has_text(forearm_exam):
    ds = pydicom.dcmread(io.BytesIO(dicom.examination_dicom_bytes(exam=forearm_exam, burned_in_annotation=True)))
    assert ds.BurnedInAnnotation == "YES"


def test_export_is_audited(staff_client, clinic_staff, forearm_exam, patient):
    assert staff_client.get(f"/examinations/{forearm_exam.uuid}/dicom/").status_code == 200
    entry = AuditEntry.objects.get(action="dicom.export")
    assert entry.actor == clinic_staff
    assert entry.target_uuid == str(forearm_exam.uuid)
    assert entry.patient_uuid == str(patient.uuid)


@pytest.mark.parametrize("who", ["outside_client", "patient_client", "other_patient_client"])
def test_export_is_404_for_who_may_not_have_it(request, who, forearm_exam):
    client = request.getfixturevalue(who)
    response = client.get(f"/examinations/{forearm_exam.uuid}/dicom/")
    assert response.status_code == 404
    assert not AuditEntry.objects.filter(action="dicom.export").exists()


def test_examination_page_links_the_export(clinician_client, forearm_exam):
    page = clinician_client.get(f"/examinations/{forearm_exam.uuid}/").content.decode()
    assert f'href="/examinations/{forearm_exam.uuid}/dicom/"' in page
    assert "Export DICOM" in page


# --- Import ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sop_class", [dicom.DERMOSCOPIC_PHOTOGRAPHY, dicom.VL_PHOTOGRAPHIC])
def test_dicom_of_the_right_patient_is_accepted(staff_client, lesion, sop_class):
    pixels = _pixels()
    response = _upload(
        staff_client,
        lesion,
        _dicom_upload(patient_id=lesion.patient.medical_record_number, sop_class=sop_class, pixels=pixels),
    )
    assert response.status_code == 201, response.content
    exam = Examination.objects.get()
    assert (exam.image_width, exam.image_height) == (160, 120)
    np.testing.assert_array_equal(_stored_array(exam), pixels)


def test_jpeg_baseline_dicom_is_accepted(staff_client, lesion):
    pixels = np.zeros((120, 160, 3), dtype=np.uint8)
    pixels[:, :80] = (200, 120, 90)
    response = _upload(
        staff_client, lesion, _dicom_upload(patient_id=lesion.patient.medical_record_number, pixels=pixels, jpeg=True)
    )
    assert response.status_code == 201, response.content
    stored = _stored_array(Examination.objects.get()).astype(int)
    assert np.abs(stored - pixels.astype(int)).mean() < 4  # lossy, but the same picture


def test_record_number_is_compared_as_the_blind_index_compares_it(staff_client, lesion):
    mrn = lesion.patient.medical_record_number  # MRN-1000nn
    response = _upload(staff_client, lesion, _dicom_upload(patient_id=f" {mrn.lower()[:4]} {mrn[4:]} "))
    assert response.status_code == 201, response.content


def test_exported_file_imports_into_the_same_patient(clinician_client, staff_client, forearm_exam):
    exported = clinician_client.get(f"/examinations/{forearm_exam.uuid}/dicom/").content
    response = _upload(staff_client, forearm_exam.lesion, exported)
    assert response.status_code == 201, response.content
    new = Examination.objects.exclude(pk=forearm_exam.pk).get()
    np.testing.assert_array_equal(_stored_array(new), _stored_array(forearm_exam))


def test_dicom_of_another_patient_is_refused_and_nothing_stored(staff_client, lesion, other_patient, settings):
    response = _upload(staff_client, lesion, _dicom_upload(patient_id=other_patient.medical_record_number))
    assert response.status_code == 400
    body = response.content.decode()
    assert "does not match this patient's record number" in body
    assert other_patient.medical_record_number not in body
    assert lesion.patient.medical_record_number not in body
    _assert_nothing_stored(settings)


def test_web_form_refuses_another_patients_dicom_and_keeps_the_good_image(staff_client, lesion, other_patient):
    good = _dicom_upload(patient_id=lesion.patient.medical_record_number)
    wrong = _dicom_upload(patient_id=other_patient.medical_record_number)
    response = staff_client.post(
        f"/lesions/{lesion.uuid}/examinations/new/",
        {"image": [SimpleUploadedFile("a.dcm", good), SimpleUploadedFile("b.dcm", wrong)]},
    )
    assert response.status_code == 302
    assert Examination.objects.count() == 1
    page = staff_client.get(response["Location"]).content.decode()
    assert "Image 2 of 2: The DICOM file&#x27;s patient ID does not match" in page


@pytest.mark.parametrize(
    ("sop_class", "what"), [(CT_IMAGE_STORAGE, "CT Image Storage"), (MR_IMAGE_STORAGE, "MR Image Storage")]
)
def test_dicom_of_another_modality_is_refused(staff_client, lesion, settings, sop_class, what):
    grey = _pixels()
    response = _upload(
        staff_client,
        lesion,
        _dicom_upload(patient_id=lesion.patient.medical_record_number, sop_class=sop_class, pixels=grey),
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert what in body
    assert "Only Dermoscopic Photography and VL Photographic" in body
    _assert_nothing_stored(settings)


def test_secondary_capture_is_refused(staff_client, lesion, settings):
    response = _upload(
        staff_client,
        lesion,
        _dicom_upload(patient_id=lesion.patient.medical_record_number, sop_class=SECONDARY_CAPTURE),
    )
    assert response.status_code == 400
    assert "Secondary Capture Image Storage" in response.content.decode()
    _assert_nothing_stored(settings)


BAD_DICOM = {
    "garbage after the DICM marker": (b"\0" * 128 + b"DICM" + bytes(range(256)) * 8, "could not be read"),
    "truncated header": (b"\0" * 128 + b"DICM\x02\x00\x00\x00UL\x04\x00", "could not be read"),
}


@pytest.mark.parametrize("case", list(BAD_DICOM))
def test_unreadable_dicom_is_refused(staff_client, lesion, settings, case):
    data, message = BAD_DICOM[case]
    response = _upload(staff_client, lesion, data)
    assert response.status_code == 400
    assert message in response.content.decode()
    _assert_nothing_stored(settings)


def test_dicom_without_an_image_is_refused(staff_client, lesion, settings):
    data = _dicom_upload(patient_id=lesion.patient.medical_record_number, with_pixels=False)
    response = _upload(staff_client, lesion, data)
    assert response.status_code == 400
    assert "contains no image" in response.content.decode()
    _assert_nothing_stored(settings)


def test_truncated_pixel_data_is_refused(staff_client, lesion, settings):
    data = _dicom_upload(patient_id=lesion.patient.medical_record_number)
    response = _upload(staff_client, lesion, data[: len(data) - 5000])
    assert response.status_code == 400
    body = response.content.decode()
    assert "could not be read" in body or "could not be decoded" in body
    _assert_nothing_stored(settings)


def test_dicom_over_the_pixel_limit_is_refused_before_decoding(staff_client, lesion, settings):
    settings.DERMATRACK_MAX_IMAGE_PIXELS = 10_000
    response = _upload(staff_client, lesion, _dicom_upload(patient_id=lesion.patient.medical_record_number))
    assert response.status_code == 400
    assert "too many pixels" in response.content.decode()
    _assert_nothing_stored(settings)


def test_upload_form_accepts_dicom_files(staff_client, lesion):
    page = staff_client.get(f"/lesions/{lesion.uuid}/").content.decode()
    assert "application/dicom,.dcm" in page


def test_text_found_by_the_ocr_sets_burned_in_annotation(clinician_client, lesion):
    """An image the OCR found text in (a label, an overlay) is exported with BurnedInAnnotation YES."""
    import pydicom

    from lesions.models import Examination

    exam = ExaminationFactory(lesion=lesion, status=Examination.Status.DONE)
    url = reverse("lesions:examination-dicom", kwargs={"examination_uuid": exam.uuid})
    plain = pydicom.dcmread(io.BytesIO(clinician_client.get(url).content))
    assert plain.BurnedInAnnotation == "NO"
    Examination.objects.filter(pk=exam.pk).update(ocr_boxes=[[10, 10, 60, 30]])
    labelled = pydicom.dcmread(io.BytesIO(clinician_client.get(url).content))
    assert labelled.BurnedInAnnotation == "YES"


def test_a_redacted_export_paints_over_the_text_and_has_no_burned_in_annotation(clinician_client, lesion):
    """The text the OCR found (a label box) is painted over in the exported pixels on request."""
    import numpy as np
    import pydicom

    from lesions.models import Examination

    exam = ExaminationFactory(
        lesion=lesion,
        status=Examination.Status.DONE,
        image=ContentFile(png_bytes(size=(160, 120), seed=5), name="x.png"),
    )
    Examination.objects.filter(pk=exam.pk).update(ocr_boxes=[[10, 10, 60, 30]])
    url = reverse("lesions:examination-dicom", kwargs={"examination_uuid": exam.uuid})
    original = pydicom.dcmread(io.BytesIO(clinician_client.get(url).content)).pixel_array
    redacted_ds = pydicom.dcmread(io.BytesIO(clinician_client.get(url, {"redact": "1"}).content))
    redacted = redacted_ds.pixel_array
    assert redacted_ds.BurnedInAnnotation == "NO"
    box = redacted[10:31, 10:61].reshape(-1, 3)
    assert (box == box[0]).all()  # one flat colour where the label was
    assert not (original[10:31, 10:61].reshape(-1, 3) == box[0]).all()
    assert np.array_equal(original[80:, 100:], redacted[80:, 100:])  # the rest untouched
