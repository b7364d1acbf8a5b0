from django.urls import path

from portal.web.privacy import views

app_name = "privacy"
urlpatterns = [
    path("patients/<uuid:patient_uuid>/export/", views.patient_export_view, name="patient-export"),
    path("patients/<uuid:patient_uuid>/erase/", views.patient_erase_view, name="patient-erase"),
    path("me/export/", views.my_export, name="my-export"),
    path("emergency-access/", views.emergency_access, name="emergency-access"),
    path("audit/", views.audit_list, name="audit-list"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
]
