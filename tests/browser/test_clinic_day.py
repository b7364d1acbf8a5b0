"""A clinic's day in Chromium, against the README's own run command (`python -m portal.bootstrap
run`: migrations, demo seed, runserver and a real Celery worker, embedded defaults), not the test
server: staff register a patient and record two visits of one lesion, three months apart; the
dermatologist triages the lesion's one alert; the queue and the patient's page show the decision.
Logins are the seed's printed passwords and TOTP keys. Screenshots: test-artifacts/clinic-day-*.png.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import time
from pathlib import Path

import pytest
from django_otp.oath import totp
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import ARTIFACTS, DESKTOP, shot
from tests.running_portal import Portal, running_portal

pytestmark = pytest.mark.worker

SURNAME = "Quellenhof"  # fictional; unique in the demo data
ANALYSIS_SECONDS = 240  # two images, classification and explanations, on a busy 2-core machine


def _high_risk_image(tmp_path: Path) -> Path:
    """A generated lesion image that the committed model scores above its alert threshold and the
    image check accepts, so that the worker's real result raises an alert (chosen by running the
    model here, as the worker will)."""
    from django.conf import settings

    from inference.classifier import get_classifier
    from inference.image_check import ImageChecker
    from portal.web.management.commands.seed_demo import synthetic_lesion_image

    clf = get_classifier(settings.DERMATRACK_MODEL_DIR)
    checker = ImageChecker(clf)
    best = None
    for seed in range(40):
        data = synthetic_lesion_image(seed=seed, kind="mel")
        image = Image.open(io.BytesIO(data))
        image.load()
        probabilities, logits, features = clf.predict_arrays(clf.preprocess([image]))
        risk = float(clf.malignancy_risk(probabilities)[0])
        check = checker.check(image, logits=logits[0], features=features[0])
        if check.assessable and risk >= clf.alert_threshold + 0.05 and (best is None or risk > best[0]):
            best = (risk, data)
    assert best is not None, "no generated image scores above the alert threshold"
    path = tmp_path / "lesion.jpg"
    path.write_bytes(best[1])
    return path


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    with running_portal(tmp_path_factory.mktemp("run")) as running:
        yield running


_last_token: dict[str, str] = {}


def _login(browser, portal: Portal, username: str):
    context = browser.new_context(base_url=portal.base_url, viewport=DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(portal.login_key(username, "Demo logins"))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    if "/accounts/2fa/verify/" in page.url:
        key = base64.b32decode(portal.login_key(username, "Two-factor keys"))
        token = f"{totp(key):06d}"
        while token == _last_token.get(username):  # django-otp refuses a replayed token
            time.sleep(2)
            token = f"{totp(key):06d}"
        _last_token[username] = token
        page.locator("input[name=token]").fill(token)
        page.get_by_role("button", name="Verify").click()
        page.wait_for_load_state()
    assert "/accounts/" not in page.url, f"{username} could not log in: {page.url}"
    return page


def _wait_until_analysed(page, count: int) -> None:
    deadline = time.monotonic() + ANALYSIS_SECONDS
    while time.monotonic() < deadline:
        try:
            page.reload()
            if page.locator(".timeline .status-done").count() >= count:
                return
        except PlaywrightError:
            # The lesion page reloads itself while an analysis is pending: on a busy machine ours
            # can cross its own ("net::ERR_ABORTED; maybe frame was detached?"). Look again.
            page.wait_for_load_state()
        time.sleep(3)
    pytest.fail(f"the worker did not analyse {count} images within {ANALYSIS_SECONDS} s")


@pytest.fixture(scope="module")
def journey(browser, portal, tmp_path_factory):
    """Staff's part, shared by the tests below: a patient, a lesion, two visits (three months
    ago and today), both analysed by the worker."""
    image = _high_risk_image(tmp_path_factory.mktemp("images"))
    staff = _login(browser, portal, "staff")
    staff.goto("/patients/new/")
    staff.get_by_label("Given name").fill("Ilse")
    staff.get_by_label("Family name").fill(SURNAME)
    staff.get_by_label("Date of birth").fill("1970-05-04")
    staff.get_by_label("Medical record number").fill("QH-4711")
    staff.get_by_label("The patient consents").check()
    staff.get_by_role("button", name=re.compile("Register", re.I)).click()
    staff.wait_for_load_state()
    assert SURNAME in staff.content()
    patient_url = staff.url

    staff.locator("#add-lesion select[name=body_site]").select_option("left_forearm")
    staff.get_by_role("button", name="Add lesion").click()
    staff.wait_for_load_state()
    lesion_url = staff.url

    three_months_ago = dt.datetime.now() - dt.timedelta(days=91)
    for captured in (three_months_ago.strftime("%Y-%m-%dT10:30"), None):
        if captured:
            staff.locator("input[name=captured_at]").fill(captured)
        staff.locator("input[name=image]").set_input_files(str(image))
        staff.locator("#upload").get_by_role("button", name="Upload").click()
        staff.wait_for_load_state()
        staff.goto(lesion_url)
    _wait_until_analysed(staff, 2)
    return {"staff": staff, "patient_url": patient_url, "lesion_url": lesion_url, "past": three_months_ago}


def test_staff_see_both_visits_on_the_progress_chart(journey):
    staff = journey["staff"]
    staff.goto(journey["lesion_url"])
    dots = staff.locator("svg.chart circle")
    assert dots.count() >= 2
    ticks = staff.locator("svg.chart text").all_text_contents()
    assert journey["past"].strftime("%Y-%m-%d") in ticks
    assert dt.date.today().isoformat() in ticks
    assert staff.locator(".timeline-item").count() == 2
    shot(staff, "clinic-day-two-visits-chart")


def test_the_dermatologist_triages_the_lesions_one_alert(browser, portal, journey):
    derm = _login(browser, portal, "dermatologist")
    derm.goto("/triage/")
    rows = derm.locator("tr.alert-row", has_text=SURNAME)
    assert rows.count() == 1, "two analysed images of one lesion make one alert"
    shot(derm, "clinic-day-queue-one-alert")
    rows.first.locator("a").first.click()
    derm.wait_for_load_state()
    assert derm.locator(".alert-history li").count() == 2
    derm.get_by_label("Biopsy / excise").check()
    derm.get_by_label(re.compile("^Reason")).fill("Asymmetric, growing; excise")
    derm.get_by_role("button", name=re.compile("Record|Save|Decide", re.I)).click()
    derm.wait_for_load_state()
    assert derm.locator("tr.alert-row", has_text=SURNAME).count() == 0
    derm.goto(journey["patient_url"])
    triage_cell = derm.locator("td.triage-state").first.inner_text()
    assert "Decided: Biopsy" in triage_cell
    assert "Open alert" not in derm.content()
    shot(derm, "clinic-day-patient-page-decided")


def test_search_finds_the_patient_by_part_of_the_surname(journey):
    staff = journey["staff"]
    staff.goto("/patients/")
    staff.locator("#patient-search").fill("ellenh")  # inside "Quellenhof", in lower case
    staff.get_by_role("button", name="Search").click()
    staff.wait_for_load_state()
    assert "/patients/" in staff.url
    assert "ellenh" not in staff.url  # searched by POST: nothing of the name in the URL
    results = staff.locator("#patient-search-results tbody tr")
    assert results.count() == 1
    assert f"{SURNAME}, Ilse" in results.first.inner_text()
    shot(staff, "clinic-day-search-part-of-surname")


def test_staff_invite_the_new_patient_who_sees_only_their_own_record(browser, portal, journey):
    staff = journey["staff"]
    staff.goto(journey["patient_url"])
    staff.get_by_role("button", name="Print a one-time code").click()
    staff.wait_for_load_state()
    code = staff.get_by_test_id("invitation-code").inner_text().strip()

    context = browser.new_context(base_url=portal.base_url, viewport=DESKTOP)
    context.set_default_timeout(30_000)
    patient = context.new_page()
    patient.goto("/activate/")
    patient.get_by_label("Invitation code").fill(code)
    patient.get_by_label("Your date of birth").fill("1970-05-04")
    patient.get_by_role("button", name="Continue").click()
    patient.wait_for_url("**/activate/password/")
    patient.get_by_label("Choose a username").fill("ilse.q")
    patient.get_by_label("Choose a password").fill("lantern-orchard-tide-42")
    patient.get_by_label("Password again").fill("lantern-orchard-tide-42")
    patient.get_by_role("button", name="Create my login").click()
    patient.wait_for_url(f"**{journey['patient_url'].split(portal.base_url.rstrip('/'), 1)[-1]}")
    assert patient.get_by_text("Your skin check record").first.is_visible()
    shot(patient, "clinic-day-patient-own-record")
    # The demo patient's record (another patient of the same clinic) is not theirs: 404.
    staff.goto("/patients/")
    other = staff.get_by_role("link", name=re.compile("Gruber")).first.get_attribute("href")
    response = patient.goto(other)
    assert response is not None
    assert response.status == 404
    context.close()


def test_the_examination_report_pdf_opens_with_the_risk_and_model_version(browser, portal, journey):
    from pypdf import PdfReader

    derm = _login(browser, portal, "dermatologist")
    derm.goto(journey["lesion_url"])
    derm.locator(".timeline-item a").first.click()  # the newest examination
    derm.wait_for_load_state()
    risk = derm.locator("p.risk strong").first.inner_text().strip()  # e.g. "63 %"
    version = re.search(r"v(\d+\.\d+\.\d+)", derm.locator(".model-version").first.inner_text()).group(1)
    link = derm.get_by_role("link", name="Examination report (PDF)")
    response = derm.context.request.get(link.get_attribute("href"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    pdf = response.body()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "clinic-day-examination-report.pdf").write_bytes(pdf)
    text = " ".join("\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert risk in text
    assert version in text
    assert "triage aid, not a diagnosis" in text
