from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from patients.models import Sex, SkinType, YesNoUnknown
from patients.selectors import patient_get_for, patient_list_for
from patients.services import patient_register
from portal import permissions
from portal.models import Clinic


class PatientOutputSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    given_name = serializers.CharField()
    family_name = serializers.CharField()
    date_of_birth = serializers.DateField()
    medical_record_number = serializers.CharField()
    sex = serializers.ChoiceField(choices=Sex.choices)
    fitzpatrick_skin_type = serializers.ChoiceField(
        choices=SkinType.choices, allow_blank=True, help_text="Blank: not recorded."
    )
    personal_history_of_melanoma = serializers.ChoiceField(choices=YesNoUnknown.choices)
    family_history_of_melanoma = serializers.ChoiceField(choices=YesNoUnknown.choices)
    clinic = serializers.CharField(source="clinic.name")
    created_at = serializers.DateTimeField()


class PatientListApi(APIView):
    @extend_schema_serializer(component_name="PatientCreate")
    class InputSerializer(serializers.Serializer):
        given_name = serializers.CharField(max_length=100)
        family_name = serializers.CharField(max_length=100)
        date_of_birth = serializers.DateField()
        medical_record_number = serializers.CharField(max_length=40)
        phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
        email = serializers.EmailField(required=False, allow_blank=True)
        address = serializers.CharField(required=False, allow_blank=True)
        sex = serializers.ChoiceField(choices=Sex.choices, required=False)
        fitzpatrick_skin_type = serializers.ChoiceField(choices=SkinType.choices, required=False, allow_blank=True)
        personal_history_of_melanoma = serializers.ChoiceField(choices=YesNoUnknown.choices, required=False)
        family_history_of_melanoma = serializers.ChoiceField(choices=YesNoUnknown.choices, required=False)
        clinic = serializers.UUIDField(required=False)
        consent_given = serializers.BooleanField(help_text="The patient's consent (recorded with its version).")

    @extend_schema(
        operation_id="patients_list",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses=inline_serializer(
            "PatientPage",
            {
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": PatientOutputSerializer(many=True),
            },
        ),
    )
    def get(self, request):
        paginator = LimitOffsetPagination()
        page = patient_list_for(
            user=request.user, paginate=lambda qs: paginator.paginate_queryset(qs, request, view=self) or []
        )
        return paginator.get_paginated_response(PatientOutputSerializer(page, many=True).data)

    @extend_schema(operation_id="patients_create", request=InputSerializer, responses={201: PatientOutputSerializer})
    def post(self, request):
        permissions.require_can_register_patients(request.user)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        clinic_uuid = values.pop("clinic", None)
        clinic = request.user.clinic
        if clinic_uuid and request.user.is_superuser:
            clinic = Clinic.objects.filter(uuid=clinic_uuid).first()
        if clinic is None:
            return Response({"clinic": ["A clinic is required."]}, status=status.HTTP_400_BAD_REQUEST)
        patient = patient_register(actor=request.user, clinic=clinic, **values)
        return Response(PatientOutputSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(APIView):
    @extend_schema(operation_id="patients_retrieve", responses=PatientOutputSerializer)
    def get(self, request, patient_uuid):
        patient = patient_get_for(user=request.user, patient_uuid=patient_uuid)
        return Response(PatientOutputSerializer(patient).data)
