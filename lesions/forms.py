import datetime as dt
import uuid

from django import forms
from django.utils import timezone

from lesions.followups import FollowUpOrder, Recall
from lesions.models import Alert, BodySite, TriageDecision
from lesions.risk import RiskBand
from patients.models import ReferralCentre
from portal.forms import DateInput


class LesionAddForm(forms.Form):
    # No default site: a preselected first choice ("Scalp") was saved whenever nobody changed it.
    body_site = forms.ChoiceField(choices=[("", "Choose a body site"), *BodySite.choices])
    label = forms.CharField(max_length=120, required=False, help_text="Where exactly, e.g. '2 cm below left scapula'.")
    first_noted = forms.DateField(widget=DateInput, initial=timezone.localdate, required=False)


class MultipleImageInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """One or several files from one <input type=file multiple>; cleans each, returns a list."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault(
            "widget",
            MultipleImageInput(attrs={"accept": "image/jpeg,image/png,image/tiff,image/webp,application/dicom,.dcm"}),
        )
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            if not data:
                return single(None, initial)
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class DateTimeLocalInput(forms.DateTimeInput):
    """`<input type=datetime-local>`: its value must be ISO (`2026-12-01T09:30`), never the
    locale's format, or the browser shows the field blank."""

    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


def _now_to_the_minute():
    return timezone.localtime().replace(second=0, microsecond=0)


class ExaminationUploadForm(forms.Form):
    """One visit: when the photographs were taken and one or more images of the lesion."""

    MAX_FILES = 10

    captured_at = forms.DateTimeField(
        label="Captured on",
        required=False,
        initial=_now_to_the_minute,
        widget=DateTimeLocalInput,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        help_text="When the images were taken: now, or earlier for a past visit. Never in the future.",
    )

    image = MultipleImageField(
        label="Image(s)",
        help_text=(
            "One or several dermoscopic photographs of this lesion: JPEG, PNG, TIFF, WebP or DICOM "
            "(dermoscopic or VL photographic), up to 20 MB each."
        ),
    )

    diameter_mm = forms.DecimalField(
        required=False, min_value=0, max_value=500, decimal_places=1, label="Measured diameter (mm)"
    )
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Clinician notes")

    def clean_captured_at(self):
        value = self.cleaned_data.get("captured_at")
        if value and value > timezone.now() + dt.timedelta(minutes=5):
            raise forms.ValidationError("The capture time is in the future.")
        return value

    def clean_image(self):
        images = self.cleaned_data["image"]
        if len(images) > self.MAX_FILES:
            raise forms.ValidationError(f"Upload at most {self.MAX_FILES} images at a time.")
        return images


class AlertFilterForm(forms.Form):
    """The triage queue's filters (GET). Invalid values fall back to the defaults."""

    STATUS_ALL = "all"

    status = forms.ChoiceField(
        choices=[*Alert.Status.choices, (STATUS_ALL, "All")], required=False, initial=Alert.Status.OPEN
    )
    band = forms.ChoiceField(choices=[("", "Any risk"), *RiskBand.choices], required=False, label="Risk band")
    clinic = forms.ChoiceField(choices=[("", "All my clinics")], required=False)

    def __init__(self, *args, clinics=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["clinic"].choices = [("", "All my clinics"), *((str(c.uuid), c.name) for c in clinics)]  # type: ignore[attr-defined]  # a ChoiceField

    def filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        status = data.get("status") or Alert.Status.OPEN
        return {
            "status": None if status == self.STATUS_ALL else status,
            "band": data.get("band") or None,
            "clinic_uuid": data.get("clinic") or None,
        }


class FollowUpFilterForm(forms.Form):
    """The follow-up list's filter and order (GET). An invalid value falls back to its default."""

    when = forms.ChoiceField(choices=Recall.choices, required=False, label="Show")
    order = forms.ChoiceField(choices=FollowUpOrder.choices, required=False, label="Sort by")

    def filters(self) -> dict:
        self.is_valid()
        data = self.cleaned_data  # the valid fields only
        return {"when": data.get("when") or Recall.ALL, "order": data.get("order") or FollowUpOrder.DATE}


class TriageDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=TriageDecision.Decision.choices, widget=forms.RadioSelect)
    follow_up_months = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=36,
        label="Follow up in (months)",
        help_text="Required for a follow-up: sets the lesion's next follow-up date.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Required. Recorded with your name and the time; visible to clinicians only.",
    )

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("decision") == TriageDecision.Decision.FOLLOW_UP and not cleaned.get("follow_up_months"):
            self.add_error("follow_up_months", "Say in how many months to follow up.")
        return cleaned


class ReferralLetterForm(forms.Form):
    """To whom and why: a centre from the referral directory or a recipient typed in, and the
    reason. Sent by POST (the reason is health data: never in a URL)."""

    centre = forms.ModelChoiceField(
        queryset=ReferralCentre.objects.none(),
        to_field_name="uuid",
        required=False,
        empty_label="— another recipient (below) —",
        label="Referral centre",
    )
    recipient = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        max_length=600,
        required=False,
        label="Or another recipient",
        help_text="Name and address, one line each.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), max_length=3000, label="Reason for referral")

    def __init__(self, *args, centres=None, **kwargs):
        super().__init__(*args, **kwargs)
        if centres is not None:
            self.fields["centre"].queryset = centres  # type: ignore[attr-defined]

    def clean(self):
        cleaned = super().clean() or {}
        centre, recipient = cleaned.get("centre"), (cleaned.get("recipient") or "").strip()
        if centre is None and not recipient:
            raise forms.ValidationError("Choose a referral centre or type in a recipient.")
        if centre is not None and recipient:
            raise forms.ValidationError("Choose a referral centre or type in a recipient, not both.")
        cleaned["recipient"] = recipient
        return cleaned


class HoldMoveFindForm(forms.Form):
    """Step 1 of moving a held image: whose is it? By POST: a record number is PHI, never in a URL."""

    record_number = forms.CharField(
        max_length=40,
        label="The other patient's record number",
        help_text=(
            "Exactly as on their record (spaces and case do not matter). "
            "Only patients whose lesions you manage are found."
        ),
    )


class HoldMoveForm(forms.Form):
    """Step 2: the patient found in step 1 and where on their record the image goes."""

    NEW_LESION = "new"

    patient = forms.UUIDField(widget=forms.HiddenInput)
    destination = forms.CharField(max_length=40, help_text="One of the patient's lesions, or a new lesion.")

    def clean_destination(self):
        value = self.cleaned_data["destination"]
        if value == self.NEW_LESION:
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError as exc:
            raise forms.ValidationError("Choose one of the patient's lesions or a new lesion.") from exc
