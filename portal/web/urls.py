from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from lesions import api as lesions_api
from patients import api as patients_api
from portal import authentication
from portal.web import views

portal_patterns = (
    [
        path("", views.home, name="home"),
        path("triage/", views.triage_queue, name="triage-queue"),
        # The old address of the triage queue, for bookmarks (unnamed: nothing links to it).
        path("dashboard/", RedirectView.as_view(pattern_name="portal:triage-queue", query_string=True, permanent=True)),
    ],
    "portal",
)

api_patterns = (
    [
        path("patients/", patients_api.PatientListApi.as_view(), name="patient-list"),
        path("patients/<uuid:patient_uuid>/", patients_api.PatientDetailApi.as_view(), name="patient-detail"),
        path(
            "patients/<uuid:patient_uuid>/lesions/", lesions_api.PatientLesionListApi.as_view(), name="patient-lesions"
        ),
        path("lesions/<uuid:lesion_uuid>/", lesions_api.LesionDetailApi.as_view(), name="lesion-detail"),
        path(
            "lesions/<uuid:lesion_uuid>/examinations/",
            lesions_api.LesionExaminationListApi.as_view(),
            name="lesion-examinations",
        ),
        path(
            "examinations/<uuid:examination_uuid>/",
            lesions_api.ExaminationDetailApi.as_view(),
            name="examination-detail",
        ),
        path(
            "examinations/<uuid:examination_uuid>/fhir/",
            lesions_api.ExaminationFhirApi.as_view(),
            name="examination-fhir",
        ),
        path("patients/<uuid:patient_uuid>/fhir/", lesions_api.PatientFhirApi.as_view(), name="patient-fhir"),
        path("schema/", SpectacularAPIView.as_view(), name="schema"),
    ],
    "api",
)

urlpatterns = [
    path("", views.home, name="home"),
    path("", include(portal_patterns)),
    path("", include("portal.web.patients.urls")),
    path("", include("lesions.urls")),
    path("api/", include(api_patterns)),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/2fa/setup/", authentication.two_factor_setup, name="two-factor-setup"),
    path("accounts/2fa/verify/", authentication.two_factor_verify, name="two-factor-verify"),
    # Password reset: the same answer whether or not an account has that address.
    path("accounts/password/reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password/reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "accounts/password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("", include("portal.web.privacy.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "portal.web.views.bad_request"
