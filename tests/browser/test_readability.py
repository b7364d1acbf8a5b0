"""Readable at 390 px (issue 12, item 8), measured in headless Chromium at the PHONE viewport:
the progress chart's labels are drawn at least 11 CSS px tall (their font size times the SVG's
scale on screen, not the font-size attribute alone, which a scaled-down SVG ignores), tables keep
a heading beside every value, the follow-up list works on a phone, and the examination image
zooms and pans from the keyboard, the mouse and the buttons.

Before the change the chart's labels measured about 5.6 px at this width, the tables hid their
<thead> with nothing in its place, and the examination image could not be zoomed.
Screenshots: test-artifacts/phone-*.png."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from lesions.models import BodySite, Examination
from tests.browser.conftest import PHONE, fits_phone_width, login, shot
from tests.factories import ExaminationFactory, LesionFactory, PatientFactory, PredictionFactory, lesion_jpeg_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MIN_LABEL_PX = 11

# Every label of the chart that is shown: its rendered size in CSS px, its text and whether it
# lies inside the drawing (not clipped at an edge).
CHART_LABELS = """() => [...document.querySelectorAll("svg.chart")]
  .filter(svg => svg.getBoundingClientRect().width > 0)
  .flatMap(svg => {
    const frame = svg.getBoundingClientRect();
    return [...svg.querySelectorAll("text")].map(t => {
      const box = t.getBoundingClientRect();
      return {
        text: t.textContent,
        px: parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a,
        inside: box.left >= frame.left - 1 && box.right <= frame.right + 1,
      };
    });
  })"""

# For each body cell of each table: the heading shown beside it (the ::before of its
# data-label) when the header row is not visible, else the visible header cell's text.
CELL_HEADINGS = """sel => [...document.querySelectorAll(sel + " tbody td")].map(td => {
  const table = td.closest("table");
  const head = table.querySelector("thead");
  const headVisible = head && head.getBoundingClientRect().height > 1 && getComputedStyle(head).display !== "none";
  if (headVisible) return table.querySelectorAll("thead th")[td.cellIndex].textContent.trim();
  const before = getComputedStyle(td, "::before");
  return before.display === "none" ? "" : before.content.replace(/^"|"$/g, "");
})"""


def _lesion_png() -> bytes:
    """A generated lesion-like image (seed_demo's), so the zoomed screenshot shows something."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(lesion_jpeg_bytes(seed=4, size=(600, 450)))).save(buffer, format="PNG")
    return buffer.getvalue()


def _transform(page) -> str:
    return page.eval_on_selector("#viewer img.base", "img => img.style.transform")


@pytest.fixture
def charted_lesion(patient):
    """A lesion with five examinations over a year, each with a risk and a diameter."""
    lesion = LesionFactory(patient=patient, body_site=BodySite.UPPER_BACK, label="below left scapula")
    now = timezone.now()
    for i, days in enumerate((370, 280, 190, 95, 2)):
        PredictionFactory(
            examination__lesion=lesion,
            examination__captured_at=now - dt.timedelta(days=days),
            examination__diameter_mm=Decimal("4.0") + i,
            malignancy_risk=f"0.{15 + 12 * i:02d}0000",
            top_class="nv",
            probabilities={"nv": 0.8, "mel": 0.15, "bkl": 0.05},
        )
    return lesion


def test_lesion_page_chart_labels_are_readable_on_a_phone(new_page, clinician, charted_lesion):
    page = new_page(viewport=PHONE)
    login(page, clinician.username)
    page.goto(f"/lesions/{charted_lesion.uuid}/")
    assert page.locator("svg.chart-narrow").is_visible()
    assert not page.locator("svg.chart:not(.chart-narrow)").is_visible()
    labels = page.evaluate(CHART_LABELS)
    assert len(labels) >= 14  # risk and diameter ticks, dates, the threshold, "mm"
    small = [(label["text"], round(label["px"], 1)) for label in labels if label["px"] < MIN_LABEL_PX]
    assert small == [], small
    assert all(label["inside"] for label in labels), [label["text"] for label in labels if not label["inside"]]
    dates = [label["text"] for label in labels if re.fullmatch(r"\d{4}-\d{2}-\d{2}", label["text"])]
    assert 2 <= len(dates) <= 3
    assert page.get_by_text("Melanocytic nevus (nv)").first.is_visible()
    assert fits_phone_width(page)
    shot(page, "phone-lesion-chart")
    # On a desktop the wide drawing is shown, its labels as large or larger.
    page.set_viewport_size({"width": 1280, "height": 900})
    assert page.locator("svg.chart:not(.chart-narrow)").is_visible()
    assert min(label["px"] for label in page.evaluate(CHART_LABELS)) >= MIN_LABEL_PX
    assert page.js_errors == []


def test_follow_up_list_on_a_phone_keeps_its_headings(new_page, clinic_staff, clinic, patient):
    today = timezone.localdate()
    LesionFactory(patient=patient, next_follow_up=today - dt.timedelta(days=9))
    LesionFactory(patient=patient, body_site=BodySite.FACE, next_follow_up=today + dt.timedelta(days=100))
    for i in range(26):  # a second page
        LesionFactory(patient=PatientFactory(clinic=clinic), next_follow_up=today + dt.timedelta(days=200 + i))
    page = new_page(viewport=PHONE)
    login(page, clinic_staff.username)
    page.goto("/follow-ups/")
    headings = page.evaluate(CELL_HEADINGS, ".follow-up-table")
    assert len(headings) == 25 * 4
    assert set(headings) == {"Due", "Patient", "Body site", "Lesion status"}
    assert page.get_by_text("Overdue 9 days").is_visible()
    assert page.get_by_role("link", name="Next").is_visible()
    assert fits_phone_width(page)
    shot(page, "phone-follow-ups")
    page.get_by_role("link", name=re.compile(r"^Later")).click()
    page.get_by_label("Sort by").select_option("-date")
    page.get_by_role("button", name="Sort").click()
    page.wait_for_load_state()
    assert "when=later" in page.url
    assert "order=-date" in page.url
    first_due = page.locator(".follow-up-table tbody tr").first.locator("time").get_attribute("datetime")
    assert first_due == (today + dt.timedelta(days=225)).isoformat()
    shot(page, "phone-follow-ups-later")
    assert page.js_errors == []


def test_patient_and_queue_tables_keep_their_headings_on_a_phone(new_page, clinician, patient, charted_lesion):
    page = new_page(viewport=PHONE)
    login(page, clinician.username)
    page.goto(f"/patients/{patient.uuid}/")
    headings = page.evaluate(CELL_HEADINGS, ".record-layout .table")
    assert headings == ["Site", "Label", "Latest risk", "Status", "Triage", "Examinations", "Next follow-up"]
    shot(page, "phone-patient-lesions")
    assert fits_phone_width(page)
    # A table whose template writes no data-label (the patient list): filled in by tables.js.
    page.goto("/patients/")
    headings = page.evaluate(CELL_HEADINGS, ".table")
    assert headings
    assert "" not in headings
    assert set(headings) <= {"Name", "Date of birth", "Record number", "Clinic"}
    assert page.js_errors == []


def test_examination_image_zooms_and_pans_by_keyboard_mouse_and_buttons(new_page, clinician, lesion):
    exam = ExaminationFactory(
        lesion=lesion,
        image=ContentFile(_lesion_png(), name="x.png"),
        status=Examination.Status.DONE,
    )
    PredictionFactory(examination=exam, top_class="nv", probabilities={"nv": 0.8, "mel": 0.2})
    page = new_page(viewport=PHONE)
    login(page, clinician.username)
    page.goto(f"/examinations/{exam.uuid}/")
    viewer = page.locator("#viewer")
    assert viewer.get_attribute("tabindex") == "0"
    assert "zoom" in viewer.get_attribute("aria-label")
    assert page.get_by_role("row", name=re.compile(r"Melanocytic nevus \(nv\)")).is_visible()
    assert _transform(page) == ""

    viewer.focus()
    page.keyboard.press("+")
    assert "scale(1.25)" in _transform(page)
    page.keyboard.press("+")
    zoomed = _transform(page)
    assert "scale(1.5625)" in zoomed
    assert page.get_by_role("status").filter(has_text="Zoom 156 %").is_visible()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    panned = _transform(page)
    assert panned != zoomed
    assert "scale(1.5625)" in panned
    shot(page, "phone-examination-zoomed")
    page.keyboard.press("-")
    assert "scale(1.25)" in _transform(page)
    page.keyboard.press("0")
    assert _transform(page) == ""

    # Mouse: the wheel over the focused image zooms, a drag moves it.
    box = viewer.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => document.querySelector('#viewer img.base').style.transform.includes('scale(1.25)')")
    before = _transform(page)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 30, box["y"] + box["height"] / 2 + 20, steps=4)
    page.mouse.up()
    assert _transform(page) != before
    # Buttons, for a touch screen without pinch.
    page.get_by_role("button", name="Reset zoom").click()
    assert _transform(page) == ""
    page.get_by_role("button", name="Zoom in").click()
    assert "scale(1.25)" in _transform(page)
    assert fits_phone_width(page)
    assert page.js_errors == []
