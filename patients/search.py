"""Patient search over encrypted names: keyed-hash (blind-index) tokens.

Names, record numbers and birth dates are encrypted with a random IV, so SQL cannot compare
them. Every patient instead has a set of `PatientSearchToken` rows, each the HMAC-SHA256 of
one normalised piece of the record:

- ``g:<3-gram>``: every three-character substring of every word of the given and family name
  (and of each name with its hyphens, apostrophes and spaces removed, so "obrien" finds
  "O'Brien"), after normalising: Unicode NFKD, accents dropped, casefolded ("Müller" → "muller");
- ``p:<2 chars>``: the first two characters of each of those words (for "Li", "Ng", "Qu…");
- ``m:<record number>``: the whole record number, letters and digits only, casefolded;
- ``d:<YYYY-MM-DD>``: the birth date.

A query is cut the same way (a term of three characters or more gives its 3-grams, a term of
two its prefix token; one-character terms are ignored; a term that is a date, YYYY-MM-DD or
DD.MM.YYYY, gives the birth-date token) and a patient matches when they hold *all* of the
query's tokens (``GROUP BY patient HAVING COUNT(*) = n``); the whole query is also tried as a
record number. 3-grams can match across words ("ler" + "ers" in two names), so the candidates
are decrypted and checked against the real substring before anything is shown.

Keys. Tokens are keyed per clinic: HMAC(BLIND_INDEX_KEY, "patient-search" + clinic UUID) is
the key of one clinic's tokens, so equal names in two clinics give unrelated tokens and a token
table cannot link one person's records across clinics. A query is hashed under the key of each
clinic the user works in (all for administrators; plus the clinic of a break-the-glass record).
During a key rotation (BLIND_INDEX_KEY=<new>,<old>) it is hashed under both; `rotate_keys`
rewrites every patient's tokens under the newest key (`blind_indexes_refresh` below).

What this leaks, and why we accept it. Someone with the database but without the key sees, per
clinic, which patients share a token, and how many tokens each patient has (roughly the length
of their names). Token *frequencies* follow the frequencies of 3-grams in the clinic's names, so
with a list of common names an attacker can guess the frequent ones ("ann", "er…"), and a patient
whose tokens are all frequent can be narrowed to a few candidate names; equal birth-date tokens
show who shares a birthday, and the record-number token is unique per patient anyway (as
`mrn_index` already is). It does not give the names of patients with rare names, and nothing at
all without the frequency statistics of a comparable population. The alternative, decrypting
every record of the clinic for each query, leaks nothing but costs 0.6-1 s per query at 10,000
patients (measured on the 2-CPU development machine), far over the 100 ms goal. Mitigations kept: the key is
outside the database (as the field key), tokens are per clinic, no token is shorter than two
characters (single letters would be trivial to read back), and queries shorter than two
characters are refused rather than matched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from patients.models import Patient, PatientSearchToken
from portal.crypto import blind_index, blind_index_keys

MIN_TERM = 2  # characters: shorter query terms are ignored
MIN_RECORD_NUMBER = 3  # characters (letters and digits) for the whole query to count as a record number
GRAM = 3

# Letters NFKD does not decompose.
_FOLD = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "æ": "ae", "œ": "oe", "þ": "th", "ð": "d", "\u0131": "i"})
_WORD = re.compile(r"[^\W_]+")
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")


class SearchQueryError(ValueError):
    """The query is too short to search with (the message is for the user)."""


def normalise(text: str) -> str:
    """Casefolded, accents stripped: "Müller-Łukasz" -> "muller-lukasz"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", stripped.translate(_FOLD)).casefold()


def words(text: str) -> list[str]:
    """The normalised words of a name, plus the whole name without separators when it has several."""
    found = _WORD.findall(normalise(text))
    if len(found) > 1:
        found.append("".join(found))
    return found


def _name_pieces(word: str) -> set[str]:
    pieces = {f"p:{word[:2]}"} if len(word) >= MIN_TERM else set()
    pieces.update(f"g:{word[i : i + GRAM]}" for i in range(len(word) - GRAM + 1))
    return pieces


def record_number_piece(mrn: str) -> str:
    return "m:" + "".join(_WORD.findall(normalise(mrn)))


def patient_pieces(
    *, given_name: str, family_name: str, medical_record_number: str, date_of_birth: dt.date
) -> set[str]:
    """The plaintext pieces of one record, before hashing (never stored)."""
    pieces: set[str] = set()
    for word in words(given_name) + words(family_name):
        pieces |= _name_pieces(word)
    pieces.add(record_number_piece(medical_record_number))
    pieces.add(f"d:{date_of_birth.isoformat()}")
    return pieces


def _clinic_key(key: str, clinic_uuid: object) -> bytes:
    return hmac.new(key.encode(), f"patient-search:{clinic_uuid}".encode(), hashlib.sha256).digest()


def _hash(clinic_key: bytes, piece: str) -> str:
    return hmac.new(clinic_key, piece.encode(), hashlib.sha256).hexdigest()


def patient_tokens(patient: Patient, *, key: str | None = None) -> set[str]:
    """The hashed tokens of one record under `key` (default: the newest blind-index key)."""
    clinic_key = _clinic_key(key or settings.BLIND_INDEX_KEY, patient.clinic.uuid)
    pieces = patient_pieces(
        given_name=patient.given_name,
        family_name=patient.family_name,
        medical_record_number=patient.medical_record_number,
        date_of_birth=patient.date_of_birth,
    )
    return {_hash(clinic_key, piece) for piece in pieces}


@transaction.atomic
def tokens_write(patient: Patient) -> None:
    """Replace one record's tokens (registration, a change of name, number or birth date)."""
    PatientSearchToken.objects.filter(patient=patient).delete()
    PatientSearchToken.objects.bulk_create(
        PatientSearchToken(patient=patient, token=token) for token in sorted(patient_tokens(patient))
    )


# --- queries ---------------------------------------------------------------------------------


@dataclass
class ParsedQuery:
    name_words: list[str] = field(default_factory=list)
    date_of_birth: dt.date | None = None
    record_number: str = ""  # the whole query as a record number piece ("m:...")

    def pieces(self) -> set[str]:
        """What a patient must hold, all of it, to match on name and birth date."""
        pieces: set[str] = set()
        for word in self.name_words:
            if len(word) >= GRAM:
                pieces.update(f"g:{word[i : i + GRAM]}" for i in range(len(word) - GRAM + 1))
            else:
                pieces.add(f"p:{word}")
        if self.date_of_birth is not None:
            pieces.add(f"d:{self.date_of_birth.isoformat()}")
        return pieces


def _as_date(term: str) -> dt.date | None:
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(term, fmt).date()
        except ValueError:
            continue
    return None


QUERY_TOO_SHORT = (
    "Type at least two letters of a name, a whole record number or a birth date (YYYY-MM-DD or DD.MM.YYYY)."
)


def parse_query(query: str) -> ParsedQuery:
    """Raises SearchQueryError when nothing in the query is long enough to search with."""
    parsed = ParsedQuery()
    query = query.strip()
    for term in query.split():
        date = _as_date(term)
        if date is not None and parsed.date_of_birth is None:
            parsed.date_of_birth = date
            continue
        parsed.name_words.extend(w for w in _WORD.findall(normalise(term)) if len(w) >= MIN_TERM)
    mrn = record_number_piece(query)
    if len(mrn) - len("m:") >= MIN_RECORD_NUMBER:
        parsed.record_number = mrn
    if not parsed.name_words and parsed.date_of_birth is None and not parsed.record_number:
        raise SearchQueryError(QUERY_TOO_SHORT)
    return parsed


def query_tokens(pieces: Iterable[str], clinic_uuids: Iterable[object]) -> list[str]:
    """The pieces hashed under every clinic's key, under every configured key (a patient's tokens
    are all under one clinic and one key, so the count of distinct matches is still len(pieces))."""
    pieces = list(pieces)
    return [
        _hash(_clinic_key(key, clinic_uuid), piece)
        for key in blind_index_keys()
        for clinic_uuid in clinic_uuids
        for piece in pieces
    ]


def matches(patient: Patient, parsed: ParsedQuery) -> bool:
    """The exact check on a decrypted candidate: every name word a substring of a name word
    (two-letter words: a prefix), and the birth date equal; or the whole record number equal."""
    if parsed.record_number and record_number_piece(patient.medical_record_number) == parsed.record_number:
        return True
    if not parsed.name_words and parsed.date_of_birth is None:
        return False
    if parsed.date_of_birth is not None and patient.date_of_birth != parsed.date_of_birth:
        return False
    names = words(patient.given_name) + words(patient.family_name)
    return all(any((name.startswith(w) if len(w) < GRAM else w in name) for name in names) for w in parsed.name_words)


# --- key rotation and backfill ---------------------------------------------------------------


def blind_indexes_refresh(check_only: bool = False, *, batch_size: int = 500) -> int:
    """Recompute every patient's `mrn_index` and search tokens under the newest blind-index key;
    rewrite those that differ. Returns how many records were (check_only: would be) rewritten.
    Idempotent; used by `rotate_keys` and `manage.py patient_search_reindex` (backfill)."""
    changed = 0
    last = 0
    while True:
        batch = list(Patient.objects.select_related("clinic").filter(pk__gt=last).order_by("pk")[:batch_size])
        if not batch:
            return changed
        last = batch[-1].pk
        stored: dict[int, set[str]] = {p.pk: set() for p in batch}
        for patient_id, token in PatientSearchToken.objects.filter(patient__in=batch).values_list(
            "patient_id", "token"
        ):
            stored[patient_id].add(token)
        for patient in batch:
            mrn_index = blind_index(patient.medical_record_number)
            if patient_tokens(patient) == stored[patient.pk] and patient.mrn_index == mrn_index:
                continue
            changed += 1
            if check_only:
                continue
            with transaction.atomic():
                Patient.objects.filter(pk=patient.pk).update(mrn_index=mrn_index)
                tokens_write(patient)
