"""DICOM in and out, with pydicom.

Out: one examination image as a DICOM Dermoscopic Photography Image Storage object (SOP Class
1.2.840.10008.5.1.4.1.1.77.1.7, PS3.3 "Dermoscopic Photography Image IOD"), uncompressed RGB in
Explicit VR Little Endian, with the patient, study (the visit), series, equipment and image
modules filled from the record; `lesions.selectors.examination_dicom_for` is the
permission-checked, audited read the download view calls. dciodvfy (Debian's dicom3tools) validates it in the tests.

In: `decode_upload` turns an uploaded DICOM file of a dermoscopic or VL photographic image into
a Pillow image (uncompressed, RLE or JPEG baseline pixel data; pydicom's own and its Pillow
decoders, nothing else is needed) and returns its Patient ID, which `check_patient` compares with
the patient's record number before anything is stored. Other SOP classes (CT, MR, secondary
capture, ...), files without pixel data and unreadable files are refused with a clear message.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from inference.ocr import mask_text, stored_boxes
from lesions.models import BodySite, Examination
from patients.models import Patient

DERMOSCOPIC_PHOTOGRAPHY = UID("1.2.840.10008.5.1.4.1.1.77.1.7")
VL_PHOTOGRAPHIC = UID("1.2.840.10008.5.1.4.1.1.77.1.4")
# What an upload may be. Secondary capture is not accepted: it is whatever a workstation
# screenshotted (often a report or a CT slice), not a photograph of the skin.
ACCEPTED_SOP_CLASSES = {DERMOSCOPIC_PHOTOGRAPHY: "Dermoscopic Photography", VL_PHOTOGRAPHIC: "VL Photographic"}
EXPORT_VERSION = "1"
CONTENT_TYPE = "application/dicom"

# Each body site as SNOMED CT (coding scheme "SCT"): the skin of the region where CID 4029
# (Dermatology Anatomic Sites, the baseline for dermoscopy) has a code for it, else the region
# (CID 4 Anatomic Region: CID 4029 has only front/back surfaces of the limbs, and the portal
# does not record which). Code meanings as in DICOM PS3.16 (tests check them against pydicom's
# copy). The side goes in Image Laterality (0020,0062): "U" for an unpaired site, none where
# the site is paired but its side is not recorded (ear, buttocks).
BODY_SITE_CODES: dict[str, tuple[str, str]] = {
    BodySite.SCALP: ("43067004", "Skin of scalp"),
    BodySite.FACE: ("73897004", "Skin of face"),
    BodySite.EAR: ("1902009", "Skin of ear"),
    BodySite.NECK: ("43081002", "Skin of neck"),
    BodySite.CHEST: ("74160004", "Skin of chest"),
    BodySite.ABDOMEN: ("75093004", "Skin of abdomen"),
    BodySite.UPPER_BACK: ("699893008", "Skin of back of upper thoracic region"),
    BodySite.LOWER_BACK: ("113182001", "Skin of lower back"),
    BodySite.LEFT_UPPER_ARM: ("40983000", "Upper arm"),
    BodySite.RIGHT_UPPER_ARM: ("40983000", "Upper arm"),
    BodySite.LEFT_FOREARM: ("14975008", "Forearm"),
    BodySite.RIGHT_FOREARM: ("14975008", "Forearm"),
    BodySite.LEFT_HAND: ("33712006", "Skin of hand"),
    BodySite.RIGHT_HAND: ("33712006", "Skin of hand"),
    BodySite.GENITAL: ("60944009", "Skin of external genitalia"),
    BodySite.BUTTOCKS: ("22180002", "Skin of buttock"),
    BodySite.LEFT_THIGH: ("68367000", "Thigh"),
    BodySite.RIGHT_THIGH: ("68367000", "Thigh"),
    BodySite.LEFT_LOWER_LEG: ("30021000", "Lower leg"),
    BodySite.RIGHT_LOWER_LEG: ("30021000", "Lower leg"),
    BodySite.LEFT_FOOT: ("60496002", "Skin of foot"),
    BodySite.RIGHT_FOOT: ("60496002", "Skin of foot"),
}
_PAIRED_SIDE_UNKNOWN = {BodySite.EAR, BodySite.BUTTOCKS}


def image_laterality(body_site: str) -> str | None:
    if body_site.startswith("left_"):
        return "L"
    if body_site.startswith("right_"):
        return "R"
    return None if body_site in _PAIRED_SIDE_UNKNOWN else "U"


def _uid(value: uuid.UUID) -> UID:
    """A UUID as a DICOM UID (PS3.5 B.2: 2.25.<the UUID as an integer>): stable, and no
    registered root is needed."""
    return UID(f"2.25.{value.int}")


def _derived_uid(kind: str, value: uuid.UUID) -> UID:
    """A second stable UID from the same record (e.g. the series of a visit): a name-based
    UUID (RFC 4122 version 5) in the record's UUID as namespace. (pydicom's generate_uid
    ignores its entropy sources without a prefix, and a prefix needs a registered root.)"""
    return _uid(uuid.uuid5(value, f"dermatrack-{kind}"))


def _pn_part(value: str) -> str:
    # ^ = and \ are PN's component, group and value separators.
    return " ".join(value.replace("^", " ").replace("=", " ").replace("\\", " ").split())


def _person_name(patient: Patient) -> PersonName:
    family, given = _pn_part(patient.family_name), _pn_part(patient.given_name)
    return PersonName.from_named_components(family_name=family[:40], given_name=given[: 63 - min(len(family), 40)])


_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}


def _patient_sex(patient: Patient) -> str:
    """M, F or O from the recorded sex; empty (DICOM's "unknown") for unknown."""
    return _SEX.get(str(patient.sex or "").strip().upper(), "")


def _tz_offset(moment: dt.datetime) -> str:
    offset = moment.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _stored_pixels(exam: Examination, *, redact: bool = False) -> np.ndarray:
    with exam.image.open("rb") as fh:
        image: Image.Image = Image.open(io.BytesIO(fh.read()))
        image.load()
    if redact:
        image = redact_text(image, exam.ocr_boxes)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def redact_text(image: Image.Image, boxes: list) -> Image.Image:
    """The image with the text the OCR found (labels, burnt-in names and dates) painted over,
    for exports that must not carry it (research, another system)."""
    return mask_text(image, stored_boxes(boxes))


def examination_dataset(
    *, exam: Examination, burned_in_annotation: bool = False, instance_number: int = 1, redact: bool = False
) -> Dataset:
    """The DICOM object of one examination image. `burned_in_annotation`: the image shows text
    (a label, a burnt-in name or date); the OCR step says so, else NO."""
    lesion = exam.lesion
    patient = lesion.patient
    visit = exam.visit
    captured = timezone.localtime(exam.captured_at)
    pixels = _stored_pixels(exam, redact=redact)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DERMOSCOPIC_PHOTOGRAPHY
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(exam.uuid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names are not ASCII everywhere

    # SOP Common
    ds.SOPClassUID = DERMOSCOPIC_PHOTOGRAPHY
    ds.SOPInstanceUID = _uid(exam.uuid)
    ds.InstanceCreationDate = timezone.localtime().strftime("%Y%m%d")
    ds.TimezoneOffsetFromUTC = _tz_offset(captured)

    # Patient
    ds.PatientName = _person_name(patient)
    ds.PatientID = patient.medical_record_number
    ds.IssuerOfPatientID = patient.clinic.name[:64]
    ds.PatientBirthDate = patient.date_of_birth.strftime("%Y%m%d") if patient.date_of_birth else ""
    ds.PatientSex = _patient_sex(patient)

    # General Study: one study per visit (one sitting of one lesion)
    ds.StudyInstanceUID = _uid(visit.uuid)
    ds.StudyDate = captured.strftime("%Y%m%d")
    ds.StudyTime = captured.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = visit.uuid.hex[:16]
    ds.AccessionNumber = ""
    ds.StudyDescription = "Dermoscopy"

    # General Series + Dermoscopic Photography Series: modality DMS (dermoscopy)
    ds.Modality = "DMS"
    ds.SeriesInstanceUID = _derived_uid("series", visit.uuid)
    ds.SeriesNumber = 1
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime

    # Frame of Reference (required by the IOD; a photograph has no patient coordinates)
    ds.FrameOfReferenceUID = _derived_uid("frame", exam.uuid)
    ds.PositionReferenceIndicator = ""

    # General Equipment + Enhanced General Equipment: the portal that made the object
    ds.Manufacturer = "Dermatrack"
    ds.InstitutionName = patient.clinic.name[:64]
    ds.ManufacturerModelName = "Dermatrack portal"
    ds.DeviceSerialNumber = patient.clinic.uuid.hex
    ds.SoftwareVersions = [f"Dermatrack DICOM export {EXPORT_VERSION}", f"pydicom {pydicom.__version__}"]

    # General Image, General Acquisition, VL Image, Dermoscopic Image
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDateTime = captured.strftime("%Y%m%d%H%M%S")
    # DERIVED: the stored image is the upload re-encoded (and reduced, if it was large).
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.LossyImageCompression = ""  # unknown: the upload's own format is not kept
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    ds.RecognizableVisualFeatures = "NO"  # a close-up of a lesion
    ds.LightSourcePolarization = None  # Type 2: not recorded by the portal
    ds.EmitterColorTemperature = None
    ds.ContactMethod = None
    ds.OpticalMagnificationFactor = None
    code, meaning = BODY_SITE_CODES[lesion.body_site]
    site = Dataset()
    site.CodeValue = code
    site.CodingSchemeDesignator = "SCT"
    site.CodeMeaning = meaning
    ds.AnatomicRegionSequence = Sequence([site])
    laterality = image_laterality(lesion.body_site)
    if laterality is not None:
        ds.ImageLaterality = laterality
    else:
        ds.Laterality = ""  # Type 2C: a paired site, its side unknown
    ds.AcquisitionContextSequence = Sequence()

    # Image Pixel: 8-bit RGB, colour-by-pixel
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def examination_dicom_bytes(
    *, exam: Examination, instance_number: int = 1, burned_in_annotation: bool = False, redact: bool = False
) -> bytes:
    """The DICOM file (PS3.10, with its file meta information) of one examination image;
    `redact` paints over the text the OCR found (then no burnt-in annotation is left)."""
    ds = examination_dataset(
        exam=exam,
        burned_in_annotation=burned_in_annotation and not redact,
        instance_number=instance_number,
        redact=redact,
    )
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def filename(exam: Examination) -> str:
    """examination-1a2b3c4d.dcm: the record's random UUID, shortened; never a name."""
    return f"examination-{exam.uuid.hex[:8]}.dcm"


# --- Import ----------------------------------------------------------------------------------


def is_dicom(data: bytes) -> bool:
    """A DICOM file (PS3.10): a 128-byte preamble, then 'DICM'."""
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass(frozen=True)
class DecodedDicom:
    image: Image.Image
    patient_id: str  # (0010,0020) as in the file, "" when absent
    sop_class_uid: str


def _reject(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_image")


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return name if name and name != uid else "an unknown kind of"


def decode_upload(data: bytes, *, check_dimensions: Callable[[int, int], None]) -> DecodedDicom:
    """The image in an uploaded DICOM file, or a ValidationError saying why not.
    `check_dimensions(width, height)` applies the upload limits before any pixel is decoded."""
    unreadable = "The DICOM file could not be read; it may be truncated or corrupt."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about every oddity of real devices' files
            ds = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
        has_pixels = "PixelData" in ds
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "") or "")
        patient_id = str(ds.get("PatientID", "") or "").strip()
    except Exception as exc:  # pydicom raises many types for a malformed file
        raise _reject(unreadable) from exc

    if not sop_class:  # every DICOM object names its SOP class: this is not one, or it is damaged
        raise _reject(unreadable)
    if sop_class not in ACCEPTED_SOP_CLASSES:
        what = _sop_class_name(sop_class)
        kind = f" (modality {modality})" if modality else ""
        raise _reject(
            f"This DICOM file is {what} object{kind}, not a photograph of the skin. Only "
            "Dermoscopic Photography and VL Photographic DICOM images are accepted."
        )
    if not has_pixels or not rows or not columns:
        raise _reject("The DICOM file contains no image.")
    if frames > 1:
        raise _reject("Multi-frame DICOM images are not accepted; upload a single image.")
    check_dimensions(columns, rows)
    needed = rows * columns * (2 * samples * max(1, bits // 8) + 4)  # decoded array, a copy, Pillow's
    budget = settings.DERMATRACK_MAX_DECODED_BYTES
    if needed > budget:
        raise _reject(
            f"The image would need {needed / 1e6:,.0f} MB of memory to decode ({columns}x{rows}); "
            f"the limit is {budget / 1e6:,.0f} MB. Upload a smaller image."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array  # YBR (JPEG) arrives as RGB
        image = _to_image(pixels, photometric)
    except ValidationError:
        raise
    except Exception as exc:
        raise _reject(
            "The DICOM file's image could not be decoded: it may be corrupt or use a compression "
            "the portal cannot read (uncompressed, RLE and baseline JPEG are supported)."
        ) from exc
    return DecodedDicom(image=image, patient_id=patient_id, sop_class_uid=sop_class)


def _to_eight_bit(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= 255 and low >= 0:
        return values.astype(np.uint8)
    return np.clip((values - low) * (255.0 / max(high - low, 1.0)), 0, 255).astype(np.uint8)


def _to_image(pixels: np.ndarray, photometric: str) -> Image.Image:
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return Image.fromarray(_to_eight_bit(pixels), mode="RGB")
    if pixels.ndim == 2 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _to_eight_bit(pixels)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        return Image.fromarray(grey, mode="L")
    raise _reject(f"The DICOM image's colour model ({photometric or 'unknown'}) is not supported; use RGB.")


def normalise_identifier(value: str) -> str:
    """As the record number's blind index compares them: no spaces, upper case."""
    return "".join(value.split()).upper()


PATIENT_MISMATCH = (
    "The DICOM file's patient ID does not match this patient's record number: it may be another "
    "patient's image. Nothing was stored; check the image and upload it to the right record."
)


def check_patient(source_patient_id: str | None, *, patient: Patient) -> None:
    """Refuses a DICOM image made for someone else: its Patient ID must be the patient's record
    number (normalised). None (not a DICOM upload) and an empty ID (an anonymised file) pass,
    as a JPEG does. The message names neither identifier."""
    if not source_patient_id:
        return
    if normalise_identifier(source_patient_id) != normalise_identifier(patient.medical_record_number):
        raise ValidationError(PATIENT_MISMATCH, code="patient_mismatch")
