from django import forms
from django.utils import timezone

from lesions.followups import FollowUpOrder, Recall
from lesions.models import Alert, BodySite, TriageDecision
from lesions.risk import RiskBand
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
        kwargs.setdefault("widget", MultipleImageInput(attrs={"accept": "image/jpeg,image/png,image/tiff,image/webp"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            if not data:
                return single(None, initial)
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class ExaminationUploadForm(forms.Form):
    MAX_FILES = 10

    image = MultipleImageField(
        label="Image(s)",
        help_text="One or several dermoscopic photographs of this lesion: JPEG, PNG, TIFF or WebP, up to 20 MB each.",
    )

    diameter_mm = forms.DecimalField(
        required=False, min_value=0, max_value=500, decimal_places=1, label="Measured diameter (mm)"
    )
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Clinician notes")

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
