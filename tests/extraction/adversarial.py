"""Adversarial conversations for the rules extractor: inputs built to make regexes backtrack.

Shared by ``tests/extraction/test_linear_time.py`` and ``bench/extraction_worst.py``.  Each
case is a conversation of about ``size`` characters: long runs of letters, digits,
separators, '@', dots, accents, emoji and whitespace; cue words repeated ("soy ", "me llamo
", "mi número es ", "1-"); half-built emails, JSON, role tags and field assignments; a name
question followed by a long reply; many small messages; and seeded random mixtures.
"""

from __future__ import annotations

import random

USER, ASSISTANT = "user", "assistant"
ASK_NAME = "¡Hola! ¿Cómo te llamas?"

#: Units repeated to fill one message: (name, unit).  A unit repeated n times is the attack.
_RUNS = (
    ("letters", "a"),
    ("capital_word", "A"),
    ("digits", "1"),
    ("digit_dash", "1-"),
    ("digit_space", "1 "),
    ("digit_dot", "1."),
    ("digit_paren", "(1) "),
    ("plus_digit", "+1 "),
    ("separators", " -."),
    ("at_signs", "@"),
    ("dots", "."),
    ("word_at", "a@"),
    ("word_dot", "a."),
    ("half_email", "ab@cd."),
    ("email_chain", "a.b-c_d%e+"),
    ("accents", "á"),
    ("enye", "ñÑ"),
    ("emoji", "😀"),
    ("soy", "soy "),
    ("no_soy", "no soy "),
    ("me_llamo", "me llamo "),
    ("mi_numero", "mi número es "),
    ("quiero", "quiero "),
    ("spoken_email", "ana punto "),
    ("arroba", "a arroba b "),
    ("json", '{"a":'),
    ("json_nested", '{"a": {x} '),
    ("system_tag", "<system "),
    ("assignment", "nombre=x;"),
    ("here", "x aqui "),
    ("correction", "bueno "),
    ("particles", "de la "),
    ("titles", "don "),
    ("nickname", "me dicen "),
    ("spelled", "ruiz con z "),
    ("sign_off", "gracias - "),
    ("price_cue", "si es mucho "),
    ("third_party", "el de mi vecina "),
    ("negated_cue", "no es caro "),
    ("conditional", "si no me interesa "),
    ("dismissed", "caro pero vale "),
    ("cheap_question", "no es mucho? "),
)

#: Single-message cases that are not one repeated unit: a cue, then a long run, then a tail.
_FRAMED = (
    ("spaces", "hola", " ", "x"),
    ("role_line", ". ", " ", "x"),
    ("role_brackets", ". [", " ", "x"),
    ("relation_spaces", "mi vecina", " ", "x 3114567890"),
    ("email_spaces", "ana", " ", "x"),
    ("soy_long_word", "soy ", "a", "z"),
    ("name_long_word", "me llamo Ana ", "a", " bueno Ana"),
    ("phone_then_word", "", "1-", "1x"),
    ("comma_spaces", "mejor ", "x", "y"),
)


def _repeat(unit: str, size: int) -> str:
    return unit * max(1, size // len(unit))


def _mixture(size: int, seed: int) -> str:
    rng = random.Random(seed)
    units = [u for _, u in _RUNS] + ["hola ", "Juan ", "311 456 7890 ", "@gmail.com ", "\n"]
    parts, used = [], 0
    while used < size:
        unit = rng.choice(units) * rng.randint(1, 50)
        parts.append(unit)
        used += len(unit)
    return "".join(parts)[:size]


def corpus(size: int) -> dict[str, list[dict]]:
    """Every adversarial conversation of about ``size`` characters, by name."""
    cases: dict[str, list[dict]] = {}
    for name, unit in _RUNS:
        cases[name] = [{"role": USER, "content": _repeat(unit, size)}]
    for name, head, unit, tail in _FRAMED:
        body = _repeat(unit, size - len(head) - len(tail))
        cases[name] = [{"role": USER, "content": head + body + tail}]
    for seed in range(3):
        cases[f"mixture_{seed}"] = [{"role": USER, "content": _mixture(size, seed)}]
    # After a name question, a bare reply is read as a name: long replies of fillers, blanks,
    # or a nickname cue after a long run.
    for name, reply in (
        ("reply_fillers", _repeat("si ", size)),
        ("reply_blanks", " " * size + "me dicen Cata"),
        ("reply_words", _repeat("ana ", size)),
    ):
        cases[name] = [{"role": ASSISTANT, "content": ASK_NAME}, {"role": USER, "content": reply}]
    # Many small messages: per-message work must not grow with the messages before it.
    for name, text in (("many_names", "soy Ana Ruiz"), ("many_phones", "mi cel 3114567890")):
        count = max(1, size // (len(text) + len(ASK_NAME) + 2))
        cases[name] = [
            m
            for _ in range(count)
            for m in ({"role": ASSISTANT, "content": ASK_NAME}, {"role": USER, "content": text})
        ]
    return cases
