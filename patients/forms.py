from django import forms
from django.contrib.auth import password_validation

from patients.models import Sex, SkinType, YesNoUnknown
from patients.search import MIN_TERM
from portal.forms import DateInput
from portal.models import Clinic


class PatientFieldsForm(forms.Form):
    """The demographics and melanoma risk factors, as registration and editing share them."""

    given_name = forms.CharField(max_length=100)
    family_name = forms.CharField(max_length=100)
    date_of_birth = forms.DateField(widget=DateInput)
    medical_record_number = forms.CharField(max_length=40, label="Medical record number")
    # Not required: an API client or an older form that leaves them out records "unknown".
    sex = forms.ChoiceField(choices=Sex.choices, initial=Sex.UNKNOWN, required=False)
    fitzpatrick_skin_type = forms.ChoiceField(
        choices=[("", "Not recorded"), *SkinType.choices],
        required=False,
        label="Fitzpatrick skin type",
    )
    personal_history_of_melanoma = forms.ChoiceField(
        choices=YesNoUnknown.choices, initial=YesNoUnknown.UNKNOWN, required=False, label="Personal history of melanoma"
    )
    family_history_of_melanoma = forms.ChoiceField(
        choices=YesNoUnknown.choices,
        initial=YesNoUnknown.UNKNOWN,
        required=False,
        label="Family history of melanoma",
        help_text="A first-degree relative (parent, sibling, child) had melanoma.",
    )
    phone = forms.CharField(max_length=40, required=False)
    email = forms.EmailField(required=False)
    address = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class PatientEditForm(PatientFieldsForm):
    pass


class PatientSearchForm(forms.Form):
    """Sent by POST (portal.web.patients.views.patient_list says why)."""

    q = forms.CharField(
        max_length=120,
        min_length=MIN_TERM,
        label="Find a patient",
        help_text="Part of a name, a whole record number or a birth date (YYYY-MM-DD or DD.MM.YYYY).",
        widget=forms.TextInput(attrs={"id": "patient-search", "type": "search", "autocomplete": "off"}),
        error_messages={
            "min_length": "Type at least %(limit_value)d characters.",
            "required": "Type something to search for.",
        },
    )


class PatientRegisterForm(PatientFieldsForm):
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


class ActivateCodeForm(forms.Form):
    """The public activation page: the code from the printed slip and the date of birth."""

    code = forms.CharField(
        max_length=40,
        label="Invitation code",
        help_text="The 12 characters on the slip from your clinic, e.g. ABCD-EFGH-JKMN.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autocapitalize": "characters"}),
    )
    date_of_birth = forms.DateField(label="Your date of birth", widget=DateInput(attrs={"autocomplete": "bday"}))


class SetPasswordForm(forms.Form):
    """Choose the login: a username and a password (the site's password validators apply)."""

    username = forms.CharField(
        max_length=150,
        label="Choose a username",
        help_text="Letters, digits and @ . + - _ only. You log in with it.",
        widget=forms.TextInput(attrs={"autocomplete": "username"}),
    )
    password1 = forms.CharField(
        label="Choose a password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self):
        cleaned = super().clean() or {}
        if cleaned.get("password1") and cleaned.get("password2") and cleaned["password1"] != cleaned["password2"]:
            self.add_error("password2", "The two passwords differ.")
        return cleaned
