"""Patient search by part of a name, record number or birth date, over blind-index tokens:
within what the user may see, case- and accent-insensitive, tokens that hold no plaintext and
follow a change of name, an audit entry without the query, and the audit trail's patient finder."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from patients import search
from patients.models import Patient, PatientSearchToken
from patients.selectors import patient_find_by_mrn, patient_search_for
from patients.services import patient_update
from portal.models import AuditEntry
from tests.factories import PatientFactory


@pytest.fixture
def mueller(clinic):
    return PatientFactory(
        clinic=clinic,
        given_name="Anna-Lena",
        family_name="Müller-Lüdenscheidt",
        date_of_birth=dt.date(1961, 3, 14),
        medical_record_number="NS-4711 B",
    )


@pytest.fixture
def elsewhere(other_clinic):
    """The same name in another clinic."""
    return PatientFactory(
        clinic=other_clinic,
        given_name="Anna",
        family_name="Müller",
        date_of_birth=dt.date(1961, 3, 14),
        medical_record_number="NS-4711 B",
    )


def _found(user, query) -> list[Patient]:
    return patient_search_for(user=user, query=query).patients


@pytest.mark.parametrize("query", ["müller", "MULLER", "Müll", "üdensch", "LÜDENSCHEIDT", "lena", "anna mull"])
def test_finds_by_part_of_the_name_ignoring_case_and_accents(clinic_staff, mueller, patient, query):
    assert _found(clinic_staff, query) == [mueller]


def test_names_with_apostrophes_and_accents(clinic_staff, clinic):
    o_brien = PatientFactory(clinic=clinic, given_name="Seán", family_name="O'Brien")
    for query in ("obrien", "o'brien", "Sean O'Bri", "SEÁN"):
        assert _found(clinic_staff, query) == [o_brien], query
    # Not a transliteration: "ue" is not "ü".
    assert _found(clinic_staff, "Suean") == []


def test_finds_by_whole_record_number_and_by_birth_date(clinic_staff, mueller, patient):
    assert _found(clinic_staff, "ns-4711 b") == [mueller]
    assert _found(clinic_staff, "NS4711B") == [mueller]
    assert _found(clinic_staff, "NS-4711") == []  # part of a number is not a number
    assert _found(clinic_staff, "1961-03-14") == [mueller]
    assert _found(clinic_staff, "14.03.1961") == [mueller]
    assert _found(clinic_staff, "müller 1961-03-14") == [mueller]
    assert _found(clinic_staff, "müller 1961-03-15") == []
    assert patient not in _found(clinic_staff, "1961-03-14")


def test_two_letter_words_match_the_start_of_a_name(clinic_staff, clinic):
    li = PatientFactory(clinic=clinic, given_name="Wei", family_name="Li")
    lindqvist = PatientFactory(clinic=clinic, given_name="Karin", family_name="Lindqvist")
    PatientFactory(clinic=clinic, given_name="Ali", family_name="Berger")  # "li" inside, not at the start
    assert set(_found(clinic_staff, "li")) == {li, lindqvist}
    assert _found(clinic_staff, "wei li") == [li]


def test_grams_from_different_words_are_not_a_match(clinic_staff, clinic):
    """'ler' and 'ers' are both tokens of 'Keller Sommers', but 'lers' is in neither name:
    the decrypted check removes what the tokens alone would return."""
    PatientFactory(clinic=clinic, given_name="Keller", family_name="Sommers")
    assert _found(clinic_staff, "lers") == []


def test_does_not_find_a_patient_of_another_clinic_or_one_not_visible(
    clinic_staff, clinician, outside_clinician, administrator, mueller, elsewhere, patient_user
):
    assert _found(clinic_staff, "müller") == [mueller]
    assert _found(clinician, "müller") == [mueller]
    assert _found(outside_clinician, "müller") == [elsewhere]
    assert _found(outside_clinician, "NS-4711 B") == [elsewhere]
    assert set(_found(administrator, "müller")) == {mueller, elsewhere}
    assert _found(patient_user, "müller") == []


def test_a_break_the_glass_record_is_found_while_the_grant_lasts(outside_clinician, mueller, elsewhere):
    from patients.services import emergency_access_grant

    emergency_access_grant(
        actor=outside_clinician,
        clinic=mueller.clinic,
        medical_record_number="NS-4711 B",
        reason="Admitted unconscious tonight, history needed now.",
    )
    assert set(_found(outside_clinician, "müller")) == {mueller, elsewhere}


@pytest.mark.parametrize("query", ["", "a", "  x  ", "-", "a b", "1 2"])
def test_a_query_too_short_is_refused_with_a_clear_message(clinic_staff, mueller, query):
    with pytest.raises(search.SearchQueryError, match="at least two letters"):
        patient_search_for(user=clinic_staff, query=query)


def test_token_rows_contain_no_plaintext(mueller, other_clinic):
    tokens = list(PatientSearchToken.objects.filter(patient=mueller).values_list("token", flat=True))
    assert len(tokens) > 10
    assert all(len(t) == 64 and set(t) <= set("0123456789abcdef") for t in tokens)
    pieces = search.patient_pieces(
        given_name=mueller.given_name,
        family_name=mueller.family_name,
        medical_record_number=mueller.medical_record_number,
        date_of_birth=mueller.date_of_birth,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM patients_patientsearchtoken WHERE patient_id = %s", [mueller.pk])
        raw = " ".join(row[0] for row in cursor.fetchall()).lower()
    # Every row is one 64-digit hex HMAC (above), so no piece of the name, number or date can be
    # in it: checked for each piece with a letter that hex lacks (a string of digits such as
    # "1961" can occur in random hex by chance).
    plain = [p.split(":", 1)[1] for p in pieces] + ["mul", "ull", "lena", "anna", "ns4711b"]
    assert [p for p in plain if not set(p) <= set("0123456789abcdef-")]  # most of them
    for text in plain:
        if not set(text) <= set("0123456789abcdef-"):
            assert text not in raw
    # Keyed per clinic: the same name in another clinic has unrelated tokens.
    other = PatientFactory(
        clinic=other_clinic,
        given_name=mueller.given_name,
        family_name=mueller.family_name,
        date_of_birth=mueller.date_of_birth,
        medical_record_number=mueller.medical_record_number,
    )
    assert not set(tokens) & set(PatientSearchToken.objects.filter(patient=other).values_list("token", flat=True))


def test_tokens_follow_a_name_change(clinic_staff, mueller):
    patient_update(actor=clinic_staff, patient=mueller, family_name="Öztürk", medical_record_number="NS-9000")
    assert _found(clinic_staff, "öztürk") == [mueller]
    assert _found(clinic_staff, "ozturk") == [mueller]
    assert _found(clinic_staff, "müller") == []
    assert _found(clinic_staff, "NS-9000") == [mueller]
    assert _found(clinic_staff, "NS-4711 B") == []
    assert patient_find_by_mrn(clinic=mueller.clinic, medical_record_number="NS-9000") == mueller
    assert set(PatientSearchToken.objects.filter(patient=mueller).values_list("token", flat=True)) == (
        search.patient_tokens(Patient.objects.get(pk=mueller.pk))
    )


def test_search_is_audited_with_the_records_shown_and_without_the_query(clinic_staff, mueller, patient, caplog):
    caplog.set_level(logging.DEBUG)
    patient_search_for(user=clinic_staff, query="Lüdensch")
    entry = AuditEntry.objects.filter(action="patient.search").get()
    assert entry.actor == clinic_staff
    assert entry.shown == {"patient": [str(mueller.uuid)]}
    stored = " ".join(str(v) for v in entry.__dict__.values()).lower()
    assert "denscheid" not in stored
    assert "udensch" not in stored
    assert not any("densch" in r.getMessage().lower() for r in caplog.records)


def test_more_matches_than_shown_says_so(clinic_staff, clinic, monkeypatch):
    from patients import selectors

    monkeypatch.setattr(selectors, "SEARCH_RESULTS", 2)
    for given in ("Ann", "Bea", "Cem"):
        PatientFactory(clinic=clinic, given_name=given, family_name="Hofbauer")
    result = patient_search_for(user=clinic_staff, query="hofb")
    assert len(result.patients) == 2
    assert result.more
    assert [p.given_name for p in result.patients] == ["Bea", "Cem"]  # the newest two, by name


# --- the pages -------------------------------------------------------------------------------


def test_patient_list_search_box_posts_and_lists_matches(staff_client, mueller, patient):
    page = staff_client.get("/patients/").content.decode()
    assert 'id="patient-search"' in page
    assert 'method="post"' in page
    response = staff_client.post("/patients/", {"q": "lüdensch"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="patient-search-results"' in body
    assert f'href="/patients/{mueller.uuid}/"' in body
    assert f'href="/patients/{patient.uuid}/"' not in body
    assert "1 matching record" in body


def test_patient_list_short_query_shows_the_message(staff_client, mueller):
    response = staff_client.post("/patients/", {"q": "a"})
    assert response.status_code == 400
    assert "at least 2 characters" in response.content.decode()
    response = staff_client.post("/patients/", {"q": "a b"})
    assert response.status_code == 400
    assert "at least two letters of a name" in response.content.decode()


def test_audit_trail_finds_the_patient_through_the_search(administrator_client, clinic_staff, mueller, patient):
    from patients.selectors import patient_get_for

    patient_get_for(user=clinic_staff, patient_uuid=mueller.uuid)
    patient_get_for(user=clinic_staff, patient_uuid=patient.uuid)
    response = administrator_client.post("/audit/", {"find-q": "Müller-Lü"})
    assert response.status_code == 302
    assert response["Location"] == f"/audit/?patient={mueller.uuid}"
    page = administrator_client.get(response["Location"]).content.decode()
    assert str(mueller.uuid) in page
    assert str(patient.uuid) not in page
    # Several matches: a list to pick from, each a link to its trail by UUID.
    PatientFactory(clinic=mueller.clinic, given_name="Hans", family_name="Müller")
    page = administrator_client.post("/audit/", {"find-q": "müller"}).content.decode()
    assert f'href="/audit/?patient={mueller.uuid}"' in page
    assert "Pick the record" in page
    assert administrator_client.post("/audit/", {"find-q": "x"}).status_code == 400


# --- backfill and key rotation ---------------------------------------------------------------


def test_reindex_command_backfills_missing_tokens(clinic_staff, mueller):
    PatientSearchToken.objects.filter(patient=mueller).delete()
    assert _found(clinic_staff, "müller") == []
    with pytest.raises(CommandError, match="1 patient records"):
        call_command("patient_search_reindex", "--check", stdout=io.StringIO())
    call_command("patient_search_reindex", stdout=io.StringIO())
    assert _found(clinic_staff, "müller") == [mueller]
    out = io.StringIO()
    call_command("patient_search_reindex", "--check", stdout=out)
    assert "would rewrite 0" in out.getvalue()


def test_rotating_the_blind_index_key_recomputes_tokens_and_record_number_indexes(
    settings, clinic_staff, mueller, tmp_path
):
    old = settings.BLIND_INDEX_KEY
    new = Fernet.generate_key().decode()
    settings.BLIND_INDEX_KEY, settings.BLIND_INDEX_OLD_KEYS = new, [old]
    # During the rotation: found under the old key, and a duplicate number is still refused.
    assert _found(clinic_staff, "müller") == [mueller]
    assert patient_find_by_mrn(clinic=mueller.clinic, medical_record_number="NS-4711 B") == mueller
    with pytest.raises(CommandError, match="blind indexes under an old BLIND_INDEX_KEY"):
        call_command("rotate_keys", "--check", stdout=io.StringIO())
    call_command("rotate_keys", "--state-file", str(tmp_path / "r.json"), stdout=io.StringIO())
    call_command("rotate_keys", "--check", stdout=io.StringIO())
    # The new key alone finds everything.
    settings.BLIND_INDEX_OLD_KEYS = []
    assert _found(clinic_staff, "müller") == [mueller]
    assert _found(clinic_staff, "NS-4711 B") == [mueller]
    assert patient_find_by_mrn(clinic=mueller.clinic, medical_record_number="NS-4711 B") == mueller
    # The old key alone finds nothing any more.
    settings.BLIND_INDEX_KEY = old
    assert _found(clinic_staff, "müller") == []
