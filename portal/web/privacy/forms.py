from django import forms

from portal.forms import DateInput
from portal.models import Clinic, User


class EraseForm(forms.Form):
    confirm = forms.BooleanField(
        required=True, label="I understand that the record, its images and the patient's login are deleted for good"
    )


class EmergencyAccessForm(forms.Form):
    clinic = forms.ModelChoiceField(
        queryset=Clinic.objects.order_by("name"), help_text="Where the patient is registered."
    )
    medical_record_number = forms.CharField(max_length=40, label="Medical record number at that clinic")
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=20,
        help_text="Why you need this record now. It is recorded and reviewed.",
    )


class AuditFilterForm(forms.Form):
    user = forms.ModelChoiceField(
        queryset=User.objects.exclude(role="patient").order_by("username"), required=False, label="User"
    )
    patient = forms.CharField(required=False, max_length=64, label="Patient (record UUID)")
    date_from = forms.DateField(required=False, widget=DateInput, label="From")
    date_to = forms.DateField(required=False, widget=DateInput, label="To")
    flagged = forms.BooleanField(required=False, label="Flagged only")
