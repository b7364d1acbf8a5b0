from django import forms

from portal.models import Clinic


class DateInput(forms.DateInput):
    input_type = "date"


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
            self.fields["clinic"].queryset = Clinic.objects.order_by("name")
            self.fields["clinic"].required = True
        else:
            del self.fields["clinic"]
