"""Every date input of every form in the project renders its value as the ISO date a browser's
date picker accepts (issue 12, item 9). Before the change the lesion form's "First noted" and
the registration form's birth date rendered `01/12/2026` (en-GB's first input format), which
<input type=date> rejects, so the field showed blank.

The forms are found by walking the project's forms modules, so a new form with a date field is
checked without being listed here."""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
from pathlib import Path

import pytest
from django import forms

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 1)
MOMENT = dt.datetime(2026, 12, 1, 9, 30)
PICKERS = {"date": (DAY, 'value="2026-12-01"'), "datetime-local": (MOMENT, 'value="2026-12-01T09:30"')}


def _project_forms() -> list[type[forms.BaseForm]]:
    found = []
    for path in sorted(ROOT.glob("**/forms.py")):
        if any(part.startswith(".") or part in ("tests", "node_modules") for part in path.relative_to(ROOT).parts):
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, forms.BaseForm) and cls.__module__ == module.__name__
        ]
    return found


def _date_fields() -> list[tuple[str, forms.Field]]:
    return [
        (f"{cls.__module__}.{cls.__name__}.{name}", field)
        for cls in _project_forms()
        for name, field in cls.base_fields.items()
        if isinstance(field, forms.DateField | forms.DateTimeField)
    ]


def test_the_walk_finds_the_forms_with_date_fields():
    names = {name for name, _ in _date_fields()}
    assert {
        "lesions.forms.LesionAddForm.first_noted",
        "patients.forms.PatientRegisterForm.date_of_birth",
        "portal.web.privacy.forms.AuditFilterForm.date_from",
    } <= names


@pytest.mark.parametrize(("name", "field"), _date_fields(), ids=[name for name, _ in _date_fields()])
def test_every_date_field_has_a_picker_that_shows_its_value(settings, name, field):
    settings.LANGUAGE_CODE = "en-gb"
    kind = getattr(field.widget, "input_type", "")
    assert kind in PICKERS, f"{name}: a {kind or 'plain'} input, not a date picker"
    value, expected = PICKERS[kind]
    html = field.widget.render(name.rsplit(".", 1)[1], value)
    assert expected in html, html
