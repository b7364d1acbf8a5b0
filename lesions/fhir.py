"""FHIR R4B export (issue 13, part 2): one examination, or all of a patient's, as a Bundle of type
`collection` another hospital's system can read.

Per examination the bundle holds the Patient (and the clinic as Organization), a BodyStructure
for the lesion (its site coded in SNOMED CT), a Media with the image, and, when the model has
scored it, one Observation with the AI output (malignancy risk, one component per class
probability), the model as a Device and a Provenance saying the Device made the Observation.
Following HL7's "AI Transparency on FHIR" guide, the Observation and the Provenance carry the
security label AIAST ("Artificial Intelligence asserted"), and the Observation stays
`preliminary`. A DiagnosticReport ties them together: `final` only once a dermatologist's
triage decision exists for the alert that covers the examination (the dermatologist is then its
performer, as a Practitioner), `preliminary` before that, `registered` while nothing has been
scored yet. Every reference is a `urn:uuid:` fullUrl inside the bundle.

Which prediction: the one the examination page shows (the active model version's, else the
newest); older versions' predictions are not exported. An unassessable prediction ("cannot
assess - please retake") exports no risk: the Observation has a dataAbsentReason instead, as
the portal never presents that risk as a result.

Reads go through the selectors (a record the user may not see is a 404), the export is for
clinicians (a patient's own account, or any patient login, gets a 404 as for the clinical PDF
report), and each export leaves one audit entry, `fhir.export`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from fhir.resources.R4B.bodystructure import BodyStructure
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.resource import Resource
from PIL import Image

from lesions.classes import class_name
from lesions.dicom import redact_text
from lesions.models import AlertTrigger, BodySite, Examination, Lesion, ModelVersion, Prediction, TriageDecision
from lesions.selectors import (
    active_model_sha,
    examination_get_for,
    examination_list_for,
    latest_prediction,
    lesion_list_for,
)
from patients.models import Patient
from patients.selectors import patient_get_for
from portal.audit import audit_record
from portal.models import Role, User

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
AIAST = {"system": V3_OBSERVATION_VALUE, "code": "AIAST", "display": "Artificial Intelligence asserted"}
FHIR_JSON = "application/fhir+json"

# Namespace for the ids of resources that have no record of their own (report, device,
# provenance, practitioner): the same record exports under the same id every time.
_NAMESPACE = uuid.UUID("5b0d2c59-0f6e-4d0a-9a43-6f1c0e7f3d21")

# BodySite -> (SNOMED CT body structure code, display, laterality qualifier or None).
#
# The codes were chosen from SNOMED CT (International Edition, body structure hierarchy) by
# the developers, not by a terminologist: they should be reviewed by one before production use.
# The upper back has no concept of its own here: it is coded as the back of the trunk
# (77568009), with the site's name in CodeableConcept.text. Left/right are the laterality
# qualifiers 7771000 |Left| and 24028007 |Right| in BodyStructure.locationQualifier.
LEFT = ("7771000", "Left")
RIGHT = ("24028007", "Right")
SNOMED_BODY_SITES: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    BodySite.SCALP: ("41695006", "Scalp structure", None),
    BodySite.FACE: ("89545001", "Face structure", None),
    BodySite.EAR: ("117590005", "Ear structure", None),
    BodySite.NECK: ("45048000", "Neck structure", None),
    BodySite.CHEST: ("51185008", "Thoracic structure", None),
    BodySite.ABDOMEN: ("113345001", "Abdominal structure", None),
    BodySite.UPPER_BACK: ("77568009", "Structure of back of trunk", None),
    BodySite.LOWER_BACK: ("37822005", "Lower back structure", None),
    BodySite.LEFT_UPPER_ARM: ("40983000", "Upper arm structure", LEFT),
    BodySite.RIGHT_UPPER_ARM: ("40983000", "Upper arm structure", RIGHT),
    BodySite.LEFT_FOREARM: ("14975008", "Forearm structure", LEFT),
    BodySite.RIGHT_FOREARM: ("14975008", "Forearm structure", RIGHT),
    BodySite.LEFT_HAND: ("85562004", "Hand structure", LEFT),
    BodySite.RIGHT_HAND: ("85562004", "Hand structure", RIGHT),
    BodySite.GENITAL: ("263767004", "Genital structure", None),
    BodySite.BUTTOCKS: ("46862004", "Buttock structure", None),
    BodySite.LEFT_THIGH: ("68367000", "Thigh structure", LEFT),
    BodySite.RIGHT_THIGH: ("68367000", "Thigh structure", RIGHT),
    BodySite.LEFT_LOWER_LEG: ("30021000", "Lower leg structure", LEFT),
    BodySite.RIGHT_LOWER_LEG: ("30021000", "Lower leg structure", RIGHT),
    BodySite.LEFT_FOOT: ("56459004", "Foot structure", LEFT),
    BodySite.RIGHT_FOOT: ("56459004", "Foot structure", RIGHT),
}
LESION_MORPHOLOGY = {"system": SNOMED, "code": "52988006", "display": "Lesion"}

GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other", "other": "other"}


def _base() -> str:
    return str(getattr(settings, "DERMATRACK_FHIR_BASE_URL", "https://dermatrack.invalid/fhir")).rstrip("/")


def mrn_system(clinic: Any) -> str:
    """The identifier system of one clinic's record numbers (a deployment sets the base URL)."""
    return f"{_base()}/clinics/{clinic.uuid}/mrn"


def _ref(full_url: str) -> dict[str, str]:
    return {"reference": full_url}


def _urn(value: uuid.UUID | str) -> str:
    return f"urn:uuid:{value}"


def _derived(kind: str, key: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{key}")


def body_site_concept(site: str) -> dict[str, Any]:
    code, display, _ = SNOMED_BODY_SITES[site]
    return {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": BodySite(site).label}


def _laterality(site: str) -> list[dict[str, Any]]:
    side = SNOMED_BODY_SITES[site][2]
    if side is None:
        return []
    return [{"coding": [{"system": SNOMED, "code": side[0], "display": side[1]}]}]


def _probability(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 6), "unit": "probability", "system": UCUM, "code": "1"}


def _instant(value: dt.datetime) -> str:
    return timezone.localtime(value, dt.UTC).isoformat()


def _read_image(exam: Examination) -> bytes | None:
    try:
        with exam.image.open("rb") as fh:
            return fh.read()
    except (FileNotFoundError, OSError, ValueError):
        return None


def _redacted_png(data: bytes, boxes: list) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.load()
    out = io.BytesIO()
    redact_text(image, boxes).save(out, format="PNG")
    return out.getvalue()


class _Builder:
    """Collects resources by fullUrl (a patient's clinic, devices and practitioners once each)."""

    def __init__(self, *, include_images: bool, redact: bool = False) -> None:
        self.include_images = include_images
        self.redact = redact  # paint over the text the OCR found in each image
        self.entries: dict[str, Resource] = {}
        self.active = active_model_sha()

    def _add(self, full_url: str, resource: Resource) -> str:
        self.entries.setdefault(full_url, resource)
        return full_url

    def organization(self, clinic: Any) -> str:
        url = _urn(clinic.uuid)
        if url not in self.entries:
            self._add(
                url,
                Organization.model_validate(
                    {
                        "id": str(clinic.uuid),
                        "identifier": [{"system": URI, "value": url}],
                        "name": clinic.name,
                        **({"address": [{"city": clinic.city}]} if clinic.city else {}),
                    }
                ),
            )
        return url

    def patient(self, patient: Patient) -> str:
        url = _urn(patient.uuid)
        if url in self.entries:
            return url
        organization = self.organization(patient.clinic)
        data: dict[str, Any] = {
            "id": str(patient.uuid),
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                                "display": "Medical record number",
                            }
                        ]
                    },
                    "system": mrn_system(patient.clinic),
                    "value": patient.medical_record_number,
                }
            ],
            "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
            "birthDate": patient.date_of_birth,
            "managingOrganization": _ref(organization),
        }
        sex = patient.sex
        if sex:
            data["gender"] = GENDERS.get(str(sex).lower(), "unknown")
        telecom = [{"system": "phone", "value": patient.phone}] if patient.phone else []
        telecom += [{"system": "email", "value": patient.email}] if patient.email else []
        if telecom:
            data["telecom"] = telecom
        return self._add(url, FhirPatient.model_validate(data))

    def body_structure(self, lesion: Lesion) -> str:
        url = _urn(lesion.uuid)
        if url in self.entries:
            return url
        data: dict[str, Any] = {
            "id": str(lesion.uuid),
            "identifier": [{"system": URI, "value": url}],
            "active": lesion.status not in (Lesion.Status.EXCISED, Lesion.Status.RESOLVED),
            "morphology": {"coding": [LESION_MORPHOLOGY], "text": "Skin lesion"},
            "location": body_site_concept(lesion.body_site),
            "patient": _ref(self.patient(lesion.patient)),
        }
        qualifiers = _laterality(lesion.body_site)
        if qualifiers:
            data["locationQualifier"] = qualifiers
        if lesion.label:
            data["description"] = lesion.label
        return self._add(url, BodyStructure.model_validate(data))

    def media(self, exam: Examination, patient_url: str) -> str:
        url = _urn(exam.uuid)
        content: dict[str, Any] = {"contentType": "image/png", "title": f"examination-{exam.uuid.hex[:8]}.png"}
        if self.include_images:
            data = _read_image(exam)
            if data is not None and self.redact and exam.ocr_boxes:
                data = _redacted_png(data, exam.ocr_boxes)
            if data is not None:
                content["data"] = base64.b64encode(data).decode("ascii")
                content["size"] = len(data)
        resource: dict[str, Any] = {
            "id": str(exam.uuid),
            "identifier": [{"system": URI, "value": url}],
            "status": "completed",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image", "display": "Image"}
                ]
            },
            "subject": _ref(patient_url),
            "createdDateTime": exam.captured_at,
            "bodySite": body_site_concept(exam.lesion.body_site),
            "width": exam.image_width,
            "height": exam.image_height,
            "content": content,
        }
        if exam.synthetic:
            resource["note"] = [{"text": "Synthetic demo image (generated), not a photograph."}]
        return self._add(url, Media.model_validate(resource))

    def device(self, prediction: Prediction) -> str:
        url = _urn(_derived("device", prediction.model_sha256))
        if url in self.entries:
            return url
        version = ModelVersion.objects.filter(sha256=prediction.model_sha256).first()
        figures = dict(version.validation) if version is not None and version.validation else {}
        properties = [
            {"type": {"text": f"validation {name}"}, "valueQuantity": [{"value": float(value)}]}
            for name, value in sorted(figures.items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        data: dict[str, Any] = {
            "id": str(_derived("device", prediction.model_sha256)),
            "identifier": [{"system": f"{_base()}/model-sha256", "value": prediction.model_sha256}],
            "status": "active",
            "deviceName": [
                {"name": f"{prediction.model_name} {prediction.model_version}", "type": "user-friendly-name"},
                {"name": prediction.model_name, "type": "model-name"},
            ],
            "type": {"text": "AI software: dermoscopic image classifier (triage aid, not a diagnosis)"},
            "version": [{"value": prediction.model_version}],
        }
        if properties:
            data["property"] = properties
        return self._add(url, Device.model_validate(data))

    def observation(self, exam: Examination, prediction: Prediction, patient_url: str, media_url: str) -> str:
        url = _urn(prediction.uuid)
        data: dict[str, Any] = {
            "id": str(prediction.uuid),
            "meta": {"security": [AIAST]},
            "status": "preliminary",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "imaging",
                            "display": "Imaging",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {
                        "system": f"{_base()}/CodeSystem/ai-output",
                        "code": "malignancy-risk",
                        "display": "Malignancy risk P(mel)+P(bcc)+P(akiec), AI-estimated",
                    }
                ],
                "text": "AI-estimated malignancy risk of a skin lesion (a triage aid, not a diagnosis)",
            },
            "subject": _ref(patient_url),
            "focus": [_ref(self.body_structure(exam.lesion))],
            "effectiveDateTime": exam.captured_at,
            "issued": _instant(prediction.created_at),
            "bodySite": body_site_concept(exam.lesion.body_site),
            "device": _ref(self.device(prediction)),
            "derivedFrom": [_ref(media_url)],
        }
        if prediction.not_assessable:
            reasons = "; ".join(m for m in prediction.reason_messages if m) or "image quality"
            data["dataAbsentReason"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
                "text": f"The image could not be assessed ({reasons}); please retake.",
            }
        else:
            data["valueQuantity"] = _probability(prediction.risk)
            data["component"] = [
                {
                    "code": {
                        "coding": [
                            {
                                "system": f"{_base()}/CodeSystem/lesion-class",
                                "code": name,
                                "display": class_name(name),
                            }
                        ],
                        "text": f"P({name})",
                    },
                    "valueQuantity": _probability(value),
                }
                for name, value in sorted((prediction.probabilities or {}).items())
            ]
        return self._add(url, Observation.model_validate(data))

    def provenance(self, prediction: Prediction, targets: list[str], media_url: str) -> str:
        key = _derived("provenance", prediction.uuid)
        return self._add(
            _urn(key),
            Provenance.model_validate(
                {
                    "id": str(key),
                    "meta": {"security": [AIAST]},
                    "target": [_ref(t) for t in targets],
                    "recorded": _instant(prediction.created_at),
                    "agent": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "performer",
                                        "display": "Performer",
                                    }
                                ]
                            },
                            "who": _ref(self.device(prediction)),
                        }
                    ],
                    "entity": [{"role": "source", "what": _ref(media_url)}],
                }
            ),
        )

    def practitioner(self, user: User) -> str:
        key = _derived("practitioner", user.pk)
        url = _urn(key)
        if url in self.entries:
            return url
        name: dict[str, Any] = {"text": user.get_full_name() or user.username}
        if user.last_name:
            name["family"] = user.last_name
        if user.first_name:
            name["given"] = [user.first_name]
        return self._add(
            url,
            Practitioner.model_validate(
                {
                    "id": str(key),
                    "identifier": [{"system": f"{_base()}/users", "value": user.username}],
                    "name": [name],
                }
            ),
        )

    def examination(self, exam: Examination, decision: TriageDecision | None) -> str:
        patient_url = self.patient(exam.lesion.patient)
        self.body_structure(exam.lesion)
        media_url = self.media(exam, patient_url)
        prediction = latest_prediction(exam, self.active)
        observations: list[str] = []
        if prediction is not None:
            observations.append(self.observation(exam, prediction, patient_url, media_url))
            self.provenance(prediction, observations, media_url)
        key = _derived("report", exam.uuid)
        data: dict[str, Any] = {
            "id": str(key),
            "status": "final" if decision is not None else ("preliminary" if prediction is not None else "registered"),
            "code": {
                "coding": [
                    {
                        "system": f"{_base()}/CodeSystem/report",
                        "code": "dermoscopy-triage",
                        "display": "Dermoscopic image triage",
                    }
                ],
                "text": "Dermoscopic image: AI triage and dermatologist's decision",
            },
            "subject": _ref(patient_url),
            "effectiveDateTime": exam.captured_at,
            "issued": _instant(timezone.now()),
            "result": [_ref(o) for o in observations],
            "media": [{"link": _ref(media_url), "comment": "Examination image"}],
            "conclusion": _conclusion(prediction, decision),
        }
        if decision is None:
            data["meta"] = {"security": [AIAST]} if prediction is not None else None
        else:
            if decision.decided_by is not None:
                performer = self.practitioner(decision.decided_by)
                data["performer"] = [_ref(performer)]
                data["resultsInterpreter"] = [_ref(performer)]
        data = {k: v for k, v in data.items() if v not in (None, [])}
        return self._add(_urn(key), DiagnosticReport.model_validate(data))

    def bundle(self) -> Bundle:
        return Bundle.model_validate(
            {
                "id": str(uuid.uuid4()),
                "type": "collection",
                "timestamp": _instant(timezone.now()),
                "entry": [{"fullUrl": url, "resource": resource} for url, resource in self.entries.items()],
            }
        )


def _conclusion(prediction: Prediction | None, decision: TriageDecision | None) -> str:
    parts: list[str] = []
    if decision is not None:
        who = decision.decided_by.get_full_name() or decision.decided_by.username if decision.decided_by else ""
        text = f"Dermatologist's triage decision: {decision.get_decision_display()}"
        if decision.follow_up_months:
            text += f" in {decision.follow_up_months} month{'s' if decision.follow_up_months != 1 else ''}"
        text += f" ({timezone.localtime(decision.decided_at):%Y-%m-%d}{', ' + who if who else ''})."
        parts.append(text)
        if decision.reason:
            parts.append(f"Reason: {decision.reason}")
    if prediction is None:
        parts.append("Not yet analysed by the model.")
    elif prediction.not_assessable:
        parts.append("The model could not assess the image (image quality); no AI result.")
    else:
        parts.append(
            f"AI-estimated malignancy risk {prediction.risk * 100:.0f} % "
            f"({prediction.model_name} {prediction.model_version}): a triage aid, not a diagnosis."
        )
    if decision is None:
        parts.append("Not yet reviewed by a dermatologist (preliminary).")
    return " ".join(parts)


def _decisions_by_examination(exams: Iterable[Examination], active: str | None) -> dict[int, TriageDecision]:
    """examination id -> the triage decision of the alert that covers it: the alert that one of
    its predictions opened or joined (the shown prediction's first). One query."""
    exams = list(exams)
    by_prediction: dict[int, TriageDecision] = {}
    for trigger in AlertTrigger.objects.filter(prediction__examination__in=[e.pk for e in exams]).select_related(
        "alert__decision__decided_by"
    ):
        decision = getattr(trigger.alert, "decision", None)
        if decision is not None:
            by_prediction[trigger.prediction_id] = decision
    found: dict[int, TriageDecision] = {}
    for exam in exams:
        shown = latest_prediction(exam, active)
        ordered = ([shown] if shown is not None else []) + [p for p in exam.predictions.all() if p != shown]
        for prediction in ordered:
            if prediction.pk in by_prediction:
                found[exam.pk] = by_prediction[prediction.pk]
                break
    return found


def _clinicians_only(user: User, patient: Patient) -> None:
    """The export carries the model's figures, meant for clinicians: patient logins get a 404."""
    if patient.account_id == user.pk or getattr(user, "role", None) == Role.PATIENT:
        raise Http404("No such record.")


def examination_bundle_for(
    *, user: User, examination_uuid: object, include_images: bool = True, redact: bool = False
) -> Bundle:
    """One examination as a FHIR Bundle, for a clinician who may see it (404 otherwise). Audited."""
    exam = examination_get_for(user=user, examination_uuid=examination_uuid, audit=False)
    patient = exam.lesion.patient
    _clinicians_only(user, patient)
    builder = _Builder(include_images=include_images, redact=redact)
    decision = _decisions_by_examination([exam], builder.active).get(exam.pk)
    builder.examination(exam, decision)
    audit_record(actor=user, action="fhir.export", target=exam, patient=patient)
    return builder.bundle()


def patient_bundle_for(
    *, user: User, patient_uuid: object, include_images: bool = True, redact: bool = False
) -> Bundle:
    """All of one patient's lesions and examinations as a FHIR Bundle, for a clinician who may
    see the record (404 otherwise). Audited once, with the examinations exported."""
    patient = patient_get_for(user=user, patient_uuid=patient_uuid, audit=False)
    _clinicians_only(user, patient)
    builder = _Builder(include_images=include_images, redact=redact)
    builder.patient(patient)
    exams = list(
        examination_list_for(user=user)
        .filter(lesion__patient=patient)
        .select_related("lesion__patient__clinic")
        .order_by("captured_at", "id")
    )
    for lesion in lesion_list_for(user=user, patient=patient).order_by("created_at", "id"):
        builder.body_structure(lesion)
    decisions = _decisions_by_examination(exams, builder.active)
    for exam in exams:
        builder.examination(exam, decisions.get(exam.pk))
    audit_record(actor=user, action="fhir.export", target=patient, patient=patient, shown={"examination": exams})
    return builder.bundle()


def bundle_json(bundle: Bundle) -> str:
    return bundle.model_dump_json(exclude_comments=True)


def filename(kind: str, record_uuid: object) -> str:
    """e.g. examination-1a2b3c4d.fhir.json: the record's random UUID, shortened; never a name."""
    return f"{kind}-{uuid.UUID(str(record_uuid)).hex[:8]}.fhir.json"


def http_response(bundle: Bundle, name: str, *, attachment: bool = False) -> HttpResponse:
    """A Bundle as application/fhir+json: never cached, named by a short random id only."""
    response = HttpResponse(bundle_json(bundle), content_type=FHIR_JSON)
    response["Content-Disposition"] = f'{"attachment" if attachment else "inline"}; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
