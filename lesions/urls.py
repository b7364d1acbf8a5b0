from django.urls import path

from lesions import views

app_name = "lesions"
urlpatterns = [
    path("patients/<uuid:patient_uuid>/lesions/new/", views.lesion_create, name="lesion-create"),
    path("lesions/<uuid:lesion_uuid>/", views.lesion_detail, name="lesion-detail"),
    path("lesions/<uuid:lesion_uuid>/compare/", views.lesion_compare, name="lesion-compare"),
    path("lesions/<uuid:lesion_uuid>/examinations/new/", views.examination_create, name="examination-create"),
    path("examinations/<uuid:examination_uuid>/", views.examination_detail, name="examination-detail"),
    path(
        "examinations/<uuid:examination_uuid>/hold/confirm/",
        views.examination_hold_confirm,
        name="examination-hold-confirm",
    ),
    path(
        "examinations/<uuid:examination_uuid>/hold/reject/",
        views.examination_hold_reject,
        name="examination-hold-reject",
    ),
    path(
        "examinations/<uuid:examination_uuid>/hold/move/",
        views.examination_hold_move,
        name="examination-hold-move",
    ),
    path("examinations/<uuid:examination_uuid>/status/", views.examination_status, name="examination-status"),
    path("examinations/<uuid:examination_uuid>/image/", views.examination_image, name="examination-image"),
    path("examinations/<uuid:examination_uuid>/thumbnail/", views.examination_thumbnail, name="examination-thumbnail"),
    path("examinations/<uuid:examination_uuid>/report/", views.examination_report, name="examination-report"),
    path("examinations/<uuid:examination_uuid>/fhir/", views.examination_fhir, name="examination-fhir"),
    path("examinations/<uuid:examination_uuid>/dicom/", views.examination_dicom, name="examination-dicom"),
    path("examinations/<uuid:examination_uuid>/referral-letter/", views.referral_letter, name="referral-letter"),
    path("lesions/<uuid:lesion_uuid>/summary/", views.patient_summary, name="patient-summary"),
    path("alerts/<uuid:alert_uuid>/", views.alert_triage, name="alert-triage"),
    path(
        "examinations/<uuid:examination_uuid>/explanations/<str:kind>/",
        views.explanation_image,
        name="explanation-image",
    ),
]
