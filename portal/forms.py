from django import forms
from django.core.exceptions import ValidationError

ISO_DATE = "%Y-%m-%d"


class DateInput(forms.DateInput):
    """A browser date picker (<input type=date>). Its value must be ISO, YYYY-MM-DD, whatever the
    locale: under en-GB Django would write 01/12/2026, which the browser rejects, so the field
    showed blank (a lesion's "First noted", issue 12). Every date field of the portal uses this."""

    input_type = "date"

    def __init__(self, attrs=None, format=None):
        super().__init__(attrs, format=format or ISO_DATE)


def apply_validation_error(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form it came from."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
