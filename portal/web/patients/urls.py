from django.urls import path

from portal.web.patients import views

app_name = "patients"
urlpatterns = [
    path("patients/", views.patient_list, name="patient-list"),
    path("patients/new/", views.patient_create, name="patient-create"),
    path("patients/<uuid:patient_uuid>/", views.patient_detail, name="patient-detail"),
    path("patients/<uuid:patient_uuid>/edit/", views.patient_edit, name="patient-edit"),
    path("follow-ups/", views.follow_up_list, name="follow-up-list"),
    path("guidance/", views.guidance_page, name="guidance"),
    path("referrals/", views.referral_directory, name="referral-directory"),
    path("me/", views.my_record, name="my-record"),
]
