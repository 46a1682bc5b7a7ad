"""normalise(): whatever comes in, only schema values come out."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.extraction import ARQUETIPOS, OBJECIONES, Prospect, momento_for, normalise
from nexus.extraction.prospect import MAX_TEXT, normalise_email, normalise_interest, normalise_phone

FIELDS = [
    "nombre",
    "email",
    "telefono",
    "ocupacion",
    "nivel_interes",
    "objeciones",
    "arquetipo",
    "momento_optimo",
    "rechazo",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
raw_answers = st.fixed_dictionaries(
    {},
    optional={
        "nombre": json_values | st.text(alphabet="áéíóúñ ABCabc-'\t\n", max_size=300),
        "email": json_values | st.emails(),
        "telefono": json_values | st.from_regex(r"\+?[0-9 ()\-.]{5,20}", fullmatch=True),
        "ocupacion": json_values,
        "nivel_interes": json_values | st.floats(-100, 100),
        "objeciones": json_values | st.lists(st.sampled_from([*OBJECIONES, "otra", "PRECIO"])),
        "arquetipo": json_values | st.sampled_from([*ARQUETIPOS, "hacker"]),
        "momento_optimo": json_values,
        "rechazo": json_values,
    },
)


#: No deadline: the first examples pay for regex and strategy set-up; no database in the checkout.
PROPERTY = settings(deadline=None, database=None)


@PROPERTY
@given(raw_answers)
def test_normalise_always_yields_the_schema(raw):
    prospect = normalise(raw)
    data = prospect.to_dict()
    assert list(data) == FIELDS
    json.dumps(data)
    assert 0 <= prospect.nivel_interes <= 10 and (prospect.nivel_interes * 2).is_integer()
    assert prospect.momento_optimo == momento_for(prospect.nivel_interes)
    assert list(prospect.objeciones) == [o for o in OBJECIONES if o in prospect.objeciones]
    assert prospect.arquetipo is None or prospect.arquetipo in ARQUETIPOS
    assert prospect.rechazo is (raw.get("rechazo") is True)
    for text in (prospect.nombre, prospect.ocupacion):
        assert text is None or (0 < len(text) <= MAX_TEXT and text == text.strip())
    if prospect.email is not None:
        assert prospect.email == prospect.email.lower() and "@" in prospect.email
    if prospect.telefono is not None:
        digits = prospect.telefono.removeprefix("+")
        assert digits.isdigit() and 7 <= len(digits) <= 15


@PROPERTY
@given(raw_answers)
def test_normalise_is_idempotent(raw):
    once = normalise(raw)
    assert normalise(once.to_dict()) == once


def test_normalise_rejects_non_mappings():
    with pytest.raises(TypeError):
        normalise(["nombre", "Ana"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7.0),
        (6.74, 6.5),
        (6.75, 7.0),
        (99, 10.0),
        (-3, 0.0),
        ("8,5", 8.5),
        (True, 0.0),
        (float("nan"), 0.0),
        (float("inf"), 10.0),
        (None, 0.0),
        ("alto", 0.0),
    ],
)
def test_interest(value, expected):
    assert normalise_interest(value) == expected


@pytest.mark.parametrize(
    ("interest", "momento"),
    [(0, "frio"), (3.5, "frio"), (4, "tibio"), (6.5, "tibio"), (7, "caliente"), (10, "caliente")],
)
def test_momento_thresholds(interest, momento):
    assert momento_for(interest) == momento


def test_momento_in_the_input_is_ignored():
    assert normalise({"nivel_interes": 2, "momento_optimo": "caliente"}).momento_optimo == "frio"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" Ana@Example.COM ", "ana@example.com"),
        ("mailto:a.b@c.co", "a.b@c.co"),
        ("a@b", None),
        ("a..b@c.com", None),
        ("no es un correo", None),
        ("ana@localhost", None),
        ("ana@pruebas.test", None),
        ("ana@-gmail.com", None),
        ("Ñandú.Pérez@Correo.es", "ñandú.pérez@correo.es"),
        (42, None),
    ],
)
def test_email(value, expected):
    assert normalise_email(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+51 987 654 321", "+51987654321"),
        ("0034 612-345-678", "+34612345678"),
        ("311 456 7890", "+573114567890"),  # Colombian mobile, the default region
        ("(601) 234 5678", "+576012345678"),  # Bogotá landline
        ("0057 311 456 7890", "+573114567890"),
        ("+57 311 456 7890", "+573114567890"),
        ("+999 1234567", None),  # no such country code
        ("+57 123 4567", None),  # not a Colombian number
        ("(809) 555-1234", "8095551234"),  # not valid in CO: kept national, not guessed
        ("123", None),
        ("1234567890123456", None),
        ("call me", None),
        ("+51 98x 654", None),
        (987654321, "987654321"),
    ],
)
def test_phone(value, expected):
    assert normalise_phone(value) == expected


def test_phone_region_reads_national_numbers():
    assert normalise_phone("55 1234 5678", "MX") == "+525512345678"
    assert normalise_phone("55 1234 5678", "CO") == "5512345678"
    assert normalise_phone("+57 311 456 7890", "MX") == "+573114567890"
    assert normalise({"telefono": "987 654 321"}, phone_region="PE").telefono == "+51987654321"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  juan   pérez ", "Juan Pérez"),
        ("MARÍA DE LOS ÁNGELES", "María de los Ángeles"),
        ("Ana-Lucía", "Ana-Lucía"),
        ("x'; DROP TABLE t;--", None),
        ("Juan 2", None),
        ("", None),
        ("McDonald", "McDonald"),
    ],
)
def test_name(value, expected):
    assert normalise({"nombre": value}).nombre == expected


def test_prospect_is_frozen_and_defaults_are_valid():
    prospect = Prospect()
    assert prospect.to_dict()["objeciones"] == []
    with pytest.raises(AttributeError):
        prospect.nombre = "x"
