from django.urls import path

from portal.web.patients import invitations, views

app_name = "patients"
urlpatterns = [
    path("patients/", views.patient_list, name="patient-list"),
    path("patients/new/", views.patient_create, name="patient-create"),
    path("patients/<uuid:patient_uuid>/", views.patient_detail, name="patient-detail"),
    path("patients/<uuid:patient_uuid>/edit/", views.patient_edit, name="patient-edit"),
    path("patients/<uuid:patient_uuid>/invite/email/", invitations.invite_email, name="invite-email"),
    path("patients/<uuid:patient_uuid>/invite/code/", invitations.invite_code, name="invite-code"),
    path("patients/<uuid:patient_uuid>/access/revoke/", invitations.access_revoke, name="access-revoke"),
    # Public: a patient activating their login (the link's token is a random secret, nothing else).
    path("activate/", invitations.activate, name="activate"),
    path("activate/password/", invitations.activate_password, name="activate-password"),
    path("activate/<str:token>/", invitations.activate_link, name="activate-link"),
    path("follow-ups/", views.follow_up_list, name="follow-up-list"),
    path("guidance/", views.guidance_page, name="guidance"),
    path("referrals/", views.referral_directory, name="referral-directory"),
    path("me/", views.my_record, name="my-record"),
]
