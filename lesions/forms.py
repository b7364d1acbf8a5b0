from django import forms
from django.utils import timezone

from lesions.models import BodySite


class DateInput(forms.DateInput):
    input_type = "date"


class LesionAddForm(forms.Form):
    body_site = forms.ChoiceField(choices=BodySite.choices)
    label = forms.CharField(max_length=120, required=False, help_text="Where exactly, e.g. '2 cm below left scapula'.")
    first_noted = forms.DateField(widget=DateInput, initial=timezone.localdate, required=False)


class ExaminationUploadForm(forms.Form):
    image = forms.FileField(
        help_text="Dermoscopic photograph: JPEG, PNG, TIFF or WebP, up to 20 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/tiff,image/webp"}),
    )
    diameter_mm = forms.DecimalField(
        required=False, min_value=0, max_value=500, decimal_places=1, label="Measured diameter (mm)"
    )
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Clinician notes")
