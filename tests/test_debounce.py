"""What makes a version urgent (``nexus.debounce``): the offline rules on real conversations."""

import pytest

from nexus import debounce
from nexus.extraction.rules import RulesExtractor

RULES = RulesExtractor()


def signals_of(*visitor_texts: str) -> dict:
    messages = []
    for text in visitor_texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "¡Ok!"}]
    return debounce.signals(RULES.extract(messages).prospect.to_dict())


def test_signals_of_a_greeting_are_empty():
    assert signals_of("hola") == {
        "nombre": None,
        "email": None,
        "telefono": None,
        "intent": False,
        "rechazo": False,
    }


@pytest.mark.parametrize(
    "new_turn",
    [
        "me llamo Ana Ruiz",
        "mi correo es ana@correo.com",
        "mi número es +57 300 123 4567",
        "quiero empezar",
        "la verdad no me interesa",
    ],
)
def test_something_new_that_sales_acts_on_is_urgent(new_turn):
    before = signals_of("hola", "de qué se trata")
    assert debounce.urgent(signals_of("hola", "de qué se trata", new_turn), before)


@pytest.mark.parametrize(
    "new_turn", ["ok", "cuánto cuesta entrar?", "tengo poco tiempo", "hay capacitación?"]
)
def test_small_talk_and_objections_wait_for_quiet(new_turn):
    before = signals_of("hola, me llamo Ana", "quiero empezar", "mi número es 3001234567")
    after = signals_of("hola, me llamo Ana", "quiero empezar", "mi número es 3001234567", new_turn)
    assert not debounce.urgent(after, before)


def test_a_changed_phone_is_urgent_and_nothing_known_makes_any_finding_urgent():
    assert debounce.urgent(
        signals_of("mi número es 3001234567"), signals_of("mi número es 3119876543")
    )
    assert debounce.urgent(signals_of("me llamo Ana"), None)
    assert not debounce.urgent(signals_of("hola"), None)


def test_intent_is_read_next_to_contact_points():
    assert signals_of("me llamo Ana, mi correo es ana@correo.com", "quiero empezar")["intent"]
    assert not signals_of("me llamo Ana, mi correo es ana@correo.com")["intent"]


def test_new_identity_is_a_new_or_changed_contact_field_only():
    before = signals_of("hola, me llamo Ana")
    assert debounce.new_identity(
        signals_of("hola, me llamo Ana", "mi número es 3001234567"), before
    )
    assert not debounce.new_identity(signals_of("hola, me llamo Ana", "quiero empezar"), before)
    assert not debounce.new_identity(signals_of("hola, me llamo Ana"), before)
    assert debounce.new_identity(signals_of("hola, me llamo Ana"), None)
