from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from lesions import fhir, guidance
from lesions.models import BodySite
from lesions.risk import alert_threshold
from lesions.selectors import (
    active_model_sha,
    examination_get_for,
    examination_list_for,
    latest_prediction,
    lesion_get_for,
    lesion_list_for,
)
from lesions.services import examination_upload, lesion_add
from patients.selectors import patient_get_for
from portal import permissions


class LesionOutputSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    patient = serializers.UUIDField(source="patient.uuid")
    body_site = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named label: the metaclass moves it out of the class
    status = serializers.CharField()
    first_noted = serializers.DateField()
    next_follow_up = serializers.DateField()


class PredictionOutputSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    model_sha256 = serializers.CharField()
    created_at = serializers.DateTimeField()
    probabilities = serializers.DictField(child=serializers.FloatField())
    malignancy_risk = serializers.FloatField(source="risk")
    top_class = serializers.CharField()
    # False: "cannot assess - please retake"; the figures above are then not a result.
    # None: scored before the image check existed.
    assessable = serializers.BooleanField(allow_null=True)
    check_reasons = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    model_active = serializers.SerializerMethodField()

    def get_model_active(self, prediction) -> bool:
        return prediction.model_sha256 == self.context.get("active_sha")


class PlainLanguageResultSerializer(serializers.Serializer):
    """What a patient gets for their own examination: the words of their lesion page, never
    the class probabilities, risk or heatmaps meant for clinicians."""

    level = serializers.CharField()
    summary = serializers.CharField(source="short")
    headline = serializers.CharField()
    what_to_do = serializers.CharField()
    how_soon = serializers.CharField()


class ExaminationOutputSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    lesion = serializers.UUIDField(source="lesion.uuid")
    captured_at = serializers.DateTimeField()
    status = serializers.CharField()
    failure_reason = serializers.CharField()
    diameter_mm = serializers.DecimalField(max_digits=5, decimal_places=1)
    notes = serializers.CharField()
    image_width = serializers.IntegerField()
    image_height = serializers.IntegerField()
    # Text in the image (lesions.ocr): held = may be another patient's image, no prediction until
    # staff confirm; ocr_status "failed"/"timeout" = OCR could not run (the text itself is not served).
    held = serializers.BooleanField(source="is_held")
    ocr_status = serializers.CharField()
    prediction = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    def _for_patient(self, exam) -> bool:
        request = self.context.get("request")
        return request is not None and exam.lesion.patient.account_id == request.user.pk

    @extend_schema_field(PredictionOutputSerializer(allow_null=True))
    def get_prediction(self, exam):
        if self._for_patient(exam):
            return None
        if "active_sha" not in self.context:
            self.context["active_sha"] = active_model_sha()  # once per response, not per row
        prediction = latest_prediction(exam, self.context["active_sha"])
        return PredictionOutputSerializer(prediction, context=self.context).data if prediction else None

    @extend_schema_field(PlainLanguageResultSerializer(allow_null=True))
    def get_result(self, exam):
        """Only for the patient's own examinations (clinicians read `prediction`)."""
        if not self._for_patient(exam):
            return None
        if "active_sha" not in self.context:
            self.context["active_sha"] = active_model_sha()
        prediction = latest_prediction(exam, self.context["active_sha"])
        threshold = alert_threshold()
        found = guidance.for_risk(
            prediction.risk if prediction else None,
            threshold,
            status=exam.status,
            assessable=prediction.assessable if prediction else None,
        )
        return PlainLanguageResultSerializer(found).data


class PatientLesionListApi(APIView):
    @extend_schema_serializer(component_name="LesionCreate")
    class InputSerializer(serializers.Serializer):
        body_site = serializers.ChoiceField(choices=BodySite.choices)
        label = serializers.CharField(max_length=120, required=False, allow_blank=True)  # type: ignore[assignment]  # as above
        first_noted = serializers.DateField(required=False)

    @extend_schema(operation_id="patient_lesions_list", responses=LesionOutputSerializer(many=True))
    def get(self, request, patient_uuid):
        patient = patient_get_for(user=request.user, patient_uuid=patient_uuid)
        lesions = lesion_list_for(user=request.user, patient=patient)
        return Response(LesionOutputSerializer(lesions, many=True).data)

    @extend_schema(
        operation_id="patient_lesions_create", request=InputSerializer, responses={201: LesionOutputSerializer}
    )
    def post(self, request, patient_uuid):
        patient = patient_get_for(
            user=request.user, patient_uuid=patient_uuid, perm=permissions.MANAGE_LESIONS, audit=False
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lesion = lesion_add(actor=request.user, patient=patient, **data.validated_data)
        return Response(LesionOutputSerializer(lesion).data, status=status.HTTP_201_CREATED)


class LesionDetailApi(APIView):
    @extend_schema(operation_id="lesions_retrieve", responses=LesionOutputSerializer)
    def get(self, request, lesion_uuid):
        lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
        return Response(LesionOutputSerializer(lesion).data)


class LesionExaminationListApi(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema_serializer(component_name="ExaminationUpload")
    class InputSerializer(serializers.Serializer):
        image = serializers.FileField(allow_empty_file=True)
        captured_at = serializers.DateTimeField(required=False)
        diameter_mm = serializers.DecimalField(
            max_digits=5, decimal_places=1, required=False, min_value=0, max_value=500, allow_null=True
        )
        notes = serializers.CharField(required=False, allow_blank=True)

    @extend_schema(operation_id="lesion_examinations_list", responses=ExaminationOutputSerializer(many=True))
    def get(self, request, lesion_uuid):
        lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
        exams = examination_list_for(user=request.user, lesion=lesion)
        return Response(ExaminationOutputSerializer(exams, many=True, context={"request": request}).data)

    @extend_schema(
        operation_id="lesion_examinations_create", request=InputSerializer, responses={201: ExaminationOutputSerializer}
    )
    def post(self, request, lesion_uuid):
        lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid, perm=permissions.MANAGE_LESIONS)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        upload = values.pop("image")
        exam = examination_upload(actor=request.user, lesion=lesion, image=upload, image_size=upload.size, **values)
        exam = examination_get_for(user=request.user, examination_uuid=exam.uuid, audit=False)
        return Response(
            ExaminationOutputSerializer(exam, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class ExaminationDetailApi(APIView):
    @extend_schema(operation_id="examinations_retrieve", responses=ExaminationOutputSerializer)
    def get(self, request, examination_uuid):
        exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
        return Response(ExaminationOutputSerializer(exam, context={"request": request}).data)


# --- FHIR R4B export (lesions.fhir) -----------------------------------------------------------


class FhirJsonRenderer(JSONRenderer):
    """application/fhir+json: the export's own type (errors, too, come back as JSON)."""

    media_type = fhir.FHIR_JSON
    format = "fhir"


class FhirQuerySerializer(serializers.Serializer):
    images = serializers.BooleanField(required=False, default=True)
    redact = serializers.BooleanField(required=False, default=False)


_FHIR_PARAMETERS = [
    OpenApiParameter(
        "images",
        OpenApiTypes.BOOL,
        OpenApiParameter.QUERY,
        description="Include the image bytes (base64) in Media.content.data; default true.",
    ),
    OpenApiParameter(
        "redact",
        OpenApiTypes.BOOL,
        OpenApiParameter.QUERY,
        description="Paint over the text the OCR found in each image (labels, burnt-in names); default false.",
    ),
]
_FHIR_RESPONSES = {(200, fhir.FHIR_JSON): OpenApiTypes.OBJECT}


def _fhir_options(request) -> dict[str, bool]:
    query = FhirQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return {"include_images": bool(query.validated_data["images"]), "redact": bool(query.validated_data["redact"])}


class ExaminationFhirApi(APIView):
    """The examination as a FHIR R4B Bundle (collection): Patient, BodyStructure, Media, the AI
    Observation with its Device and Provenance, DiagnosticReport. Clinicians only; audited."""

    renderer_classes = [FhirJsonRenderer, JSONRenderer]

    @extend_schema(operation_id="examinations_fhir", parameters=_FHIR_PARAMETERS, responses=_FHIR_RESPONSES)
    def get(self, request, examination_uuid):
        bundle = fhir.examination_bundle_for(
            user=request.user, examination_uuid=examination_uuid, **_fhir_options(request)
        )
        return fhir.http_response(bundle, fhir.filename("examination", examination_uuid))


class PatientFhirApi(APIView):
    """All of a patient's lesions and examinations as one FHIR R4B Bundle. Clinicians only; audited."""

    renderer_classes = [FhirJsonRenderer, JSONRenderer]

    @extend_schema(operation_id="patients_fhir", parameters=_FHIR_PARAMETERS, responses=_FHIR_RESPONSES)
    def get(self, request, patient_uuid):
        bundle = fhir.patient_bundle_for(user=request.user, patient_uuid=patient_uuid, **_fhir_options(request))
        return fhir.http_response(bundle, fhir.filename("patient", patient_uuid))
