from django import forms

from portal.forms import DateInput
from portal.models import Clinic


class PatientRegisterForm(forms.Form):
    given_name = forms.CharField(max_length=100)
    family_name = forms.CharField(max_length=100)
    date_of_birth = forms.DateField(widget=DateInput)
    medical_record_number = forms.CharField(max_length=40, label="Medical record number")
    phone = forms.CharField(max_length=40, required=False)
    email = forms.EmailField(required=False)
    address = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    clinic = forms.ModelChoiceField(queryset=Clinic.objects.none(), required=False)
    consent_given = forms.BooleanField(
        required=True,
        label="The patient consents to the processing of their data",
        help_text="As described in the current consent text; the version and date are recorded.",
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is not None and user.is_superuser:
            self.fields["clinic"].queryset = Clinic.objects.order_by("name")  # type: ignore[attr-defined]  # a ModelChoiceField
            self.fields["clinic"].required = True
        else:
            del self.fields["clinic"]


class ReferralSearchForm(forms.Form):
    """Where to search from: a postcode or city, or the browser's location (filled in by
    static/js/referral_directory.js when the patient shares it; never stored)."""

    place = forms.CharField(
        max_length=120,
        required=False,
        label="Postcode or city",
        widget=forms.TextInput(attrs={"autocomplete": "postal-code"}),
    )
    latitude = forms.FloatField(required=False, min_value=-90, max_value=90, widget=forms.HiddenInput)
    longitude = forms.FloatField(required=False, min_value=-180, max_value=180, widget=forms.HiddenInput)

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        has_coordinates = cleaned.get("latitude") is not None and cleaned.get("longitude") is not None
        if not has_coordinates and not (cleaned.get("place") or "").strip():
            raise forms.ValidationError("Enter a postcode or city, or share your location.")
        cleaned["has_coordinates"] = has_coordinates
        return cleaned
