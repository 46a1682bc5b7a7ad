"""The extracted prospect and the one function that makes any raw answer safe to store.

Both extractors end in :func:`normalise`, so whatever a model (or a visitor talking to it)
produces, only values from SPEC section 6's schema reach ``update_prospect_data``: unknown
enum values are dropped, interest is clamped to 0..10 in halves, ``momento_optimo`` is
recomputed from interest, and contacts that are not an email address or a phone number are
nulled.  Emails are checked with ``email-validator`` (syntax only, no DNS) and phones parsed
with ``phonenumbers`` (Google's libphonenumber).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from ..config import DEFAULT_PHONE_REGION

ARQUETIPOS = (
    "emprendedor_dueno_negocio",
    "profesional_vision",
    "lider_hogar",
    "joven_ambicion",
    "independiente_freelancer",
    "lider_comunidad",
)
#: Canonical order of objections; ``Prospect.objeciones`` is always a subsequence of it.
OBJECIONES = ("precio", "tiempo", "confianza", "mlm")
MOMENTOS = ("caliente", "tibio", "frio")

MAX_TEXT = 200  #: characters kept of a name or occupation
MAX_EMAIL = 254  #: characters, RFC 5321's path limit
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 7, 15  #: E.164 allows at most 15 digits

_SPACES = re.compile(r"\s+")
_NOT_PHONE = re.compile(r"[^\d\s+().\-/]")
#: A person's name: letters, with inner spaces, apostrophes, hyphens and dots ("Ma. José").
_NAME = re.compile(r"[^\W\d_](?:[^\W\d_]|[ .'\-’])*", re.UNICODE)
_LOWER_PARTICLES = frozenset(
    {"de", "del", "la", "las", "los", "y", "e", "da", "do", "dos", "van", "von"}
)


@dataclass(frozen=True)
class Prospect:
    """What the visitor told us.  ``nivel_interes`` is 0..10 in steps of 0.5."""

    nombre: str | None = None
    email: str | None = None
    telefono: str | None = None
    ocupacion: str | None = None
    nivel_interes: float = 0.0
    objeciones: tuple[str, ...] = ()
    arquetipo: str | None = None
    momento_optimo: str = "frio"
    #: The visitor explicitly turned the offer down ("no me interesa").  Not a column of
    #: ``prospect_data``: the pipeline's merge uses it to tell a rejection (which lowers the
    #: prospect's interest) from a conversation that says nothing about interest (which does not).
    rechazo: bool = False

    def to_dict(self) -> dict:
        """A JSON-able dict, passed as-is to ``update_prospect_data(fingerprint, jsonb)``."""
        data = asdict(self)
        data["objeciones"] = list(self.objeciones)
        return data


def momento_for(nivel_interes: float) -> str:
    """SPEC section 6: caliente from 7, tibio from 4, else frio."""
    if nivel_interes >= 7:
        return "caliente"
    if nivel_interes >= 4:
        return "tibio"
    return "frio"


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()
    return value[:MAX_TEXT].rstrip() or None


def _capitalise(name: str) -> str:
    """Title-case a name typed all in lower or upper case; leave mixed case as typed."""
    if not (name.islower() or name.isupper()):
        return name

    def upper_first(part: str) -> str:
        first = part[:1].upper()
        return (first if len(first) == 1 else part[:1]) + part[1:]  # "ß".upper() is "SS"

    words = name.lower().split(" ")
    result = " ".join(
        w if i and w in _LOWER_PARTICLES else "-".join(upper_first(p) for p in w.split("-"))
        for i, w in enumerate(words)
    )
    return result if len(result) == len(name) and _NAME.fullmatch(result) else name


def normalise_name(value: object) -> str | None:
    """Trimmed, whitespace-collapsed, capitalised; None unless it looks like a person's name."""
    text = _text(value)
    if text is None:
        return None
    text = text.strip(" .,;:!?¡¿\"'«»()[]")
    if not text or not _NAME.fullmatch(text):
        return None
    return _capitalise(text)


def normalise_email(value: object) -> str | None:
    """Lowercased; None unless ``email-validator`` accepts its syntax (no DNS lookup).

    Special-use domains (``localhost``, ``.test``, ``.invalid`` ...) are refused with it.
    """
    if not isinstance(value, str):
        return None
    value = value.strip().lower().removeprefix("mailto:").strip(" .,;:<>()[]\"'")
    if not value or len(value) > MAX_EMAIL or "@" not in value:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def normalise_phone(value: object, region: str = DEFAULT_PHONE_REGION) -> str | None:
    """A phone number in E.164 (``+573114567890``) when ``phonenumbers`` finds it valid.

    A number with a country code (``+`` or ``00``) must be valid for that country; one
    without is read as a number of ``region`` (``NEXUS_PHONE_REGION``).  A number without a
    country code that is not valid there is kept as its digits (7..15 of them): the visitor
    gave it, and guessing another country would be worse than leaving it national.  Anything
    else (letters, too few or too many digits) is None.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > 64:
        return None
    value = value.strip()
    if _NOT_PHONE.search(value):
        return None
    digits = "".join(c for c in value if c.isdigit())
    plus = value.startswith("+")
    if not plus and digits.startswith("00"):
        digits, plus = digits[2:], True
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        return None
    return _parse_phone(digits, plus, region)


@lru_cache(maxsize=4096)
def _parse_phone(digits: str, plus: bool, region: str) -> str | None:
    """E.164 if valid; else the national digits, or None with a country code (~0.1 ms)."""
    try:
        number = phonenumbers.parse(("+" if plus else "") + digits, None if plus else region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None if plus else digits


def normalise_interest(value: object) -> float:
    """A number clamped to 0..10 and rounded to the nearest half; anything else is 0."""
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return 0.0
    value = min(10.0, max(0.0, float(value)))
    return math.floor(value * 2 + 0.5) / 2


def normalise_objections(value: object) -> tuple[str, ...]:
    """The allowed objections present in ``value`` (a list or one string), in canonical order."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return ()
    found = {v.strip().lower() for v in value if isinstance(v, str)}
    return tuple(o for o in OBJECIONES if o in found)


def normalise_archetype(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if value in ARQUETIPOS else None


def normalise(raw: Mapping, *, phone_region: str = DEFAULT_PHONE_REGION) -> Prospect:
    """Build a valid :class:`Prospect` from any mapping; unknown keys are ignored.

    ``momento_optimo`` in ``raw`` is ignored: it is recomputed from ``nivel_interes`` so the
    two can never disagree.  ``phone_region``: see :func:`normalise_phone`.  Raises
    ``TypeError`` if ``raw`` is not a mapping.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"expected a mapping, got {type(raw).__name__}")
    interest = normalise_interest(raw.get("nivel_interes"))
    return Prospect(
        nombre=normalise_name(raw.get("nombre")),
        email=normalise_email(raw.get("email")),
        telefono=normalise_phone(raw.get("telefono"), phone_region),
        ocupacion=_text(raw.get("ocupacion")),
        nivel_interes=interest,
        objeciones=normalise_objections(raw.get("objeciones")),
        arquetipo=normalise_archetype(raw.get("arquetipo")),
        momento_optimo=momento_for(interest),
        rechazo=raw.get("rechazo") is True,
    )
