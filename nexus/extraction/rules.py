"""The offline extractor: deterministic keyword and pattern rules, Spanish-aware.

It reads only the visitor's messages for personal data (an assistant message may still tell
it that the next reply is the visitor's name, as in "¿Cómo te llamas?" -> "Diego").  Keywords
are matched on *folded* text (lower case, accents removed) whose character positions equal
the original's, so a name found after "me llamo" is cut from the original with its accents.
Structured data pasted into a visitor message (a JSON object, a "system:" line, <system>
tags) is blanked out first: it is quoted or injected, not something the visitor told us.

Interest follows SPEC section 6's rubric exactly: +2 name, +3 phone, +1.5 email, +2 intent
words, -3 "no me interesa", clamped to 0..10.  All patterns are compiled at import; a typical
conversation takes well under a millisecond.
"""

from __future__ import annotations

import re
import unicodedata

from . import lexicon
from .base import ExtractionResult, Messages
from .prospect import normalise, normalise_email, normalise_phone

STRONG, WEAK = 2, 1  #: how sure a name cue is: "me llamo" beats "soy" and bare replies


def _fold_table() -> dict[int, str]:
    table = {ord("’"): "'"}
    for code in range(0x250):
        base = unicodedata.normalize("NFD", chr(code))[0].lower()
        if len(base) == 1 and base != chr(code):
            table[code] = base
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """Lower case without accents, one character per character of ``text`` (already NFC)."""
    return text.translate(_FOLD)


def _alternation(parts: tuple[str, ...] | str) -> re.Pattern[str]:
    body = parts if isinstance(parts, str) else "|".join(parts)
    return re.compile(rf"(?<![\w'])(?:{body})(?![\w'])")


_INTENT = _alternation(lexicon.INTENT)
_REJECTION = _alternation(lexicon.REJECTION)
_NEGATED = re.compile(r"(?:\bno|\bni|\btampoco)\s+(?:me\s+|lo\s+)?$")
_OBJECTIONS = {name: _alternation(parts) for name, parts in lexicon.OBJECTIONS.items()}
_ARCHETYPES = {
    name: [(weight, _alternation(p)) for weight, p in cues]
    for name, cues in lexicon.ARCHETYPES.items()
}
_OCCUPATION = _alternation(lexicon.OCCUPATIONS)
_OCCUPATION_CUE = re.compile(
    r"\b(?:soy|trabajo\s+como|trabajo\s+de|estudio\s+para)\s+(?:un[ao]?\s+)?"
)
_NAME_QUESTION = _alternation(lexicon.NAME_QUESTION)

_STRONG_CUE = re.compile(
    r"\b(?:me\s+(?:llamo|yamo|jamo)|mi\s+no[mn]bre\s+(?:es\b|:)|(?:my\s+)?name\s+is"
    r"|(?:my\s+)?name's|nombre\s*:)"
)
_WEAK_CUE = re.compile(
    r"\b(?:soy|i'?m|i\s+am|this\s+is|(?:te|le|les)\s+(?:habla|escribe)|habla(?:\s+(?:el|la))?"
    r"|me\s+(?:dicen|llaman|conocen\s+como)|(?:puedes|puede|pueden)\s+llamarme|llamame|call\s+me)\b"
)
_TITLE_DOT = re.compile(
    r"[\s:\-]*(?:(?:el|la)\s+)?(?:dra?|sra?|srta|ing|lic|prof|hna?|hno|mtr[oa]|arq|abg|mr|mrs|ms)\."
)
#: "Fernando aquí", "Ana por acá", "Kevin here": a name that opens a clause and then "aquí".
_HERE = re.compile(
    r"(?<![\w'])((?:[^\W\d_]+(?:['\-][^\W\d_]+)*[ \t]+){1,4}?)(?:por[ \t]+)?"
    r"(?:aqui|aca|here)(?![\w'])"
)
#: A sign-off closing a message: "att: Ana Ruiz", "un saludo, Mari", "gracias! - Beto".
_SIGN_OFF = re.compile(
    r"(?:(?<![\w'])(?:att|atte|atentamente|cordialmente|saludos(?:\s+cordiales)?|un\s+saludo"
    r"|un\s+abrazo|abrazos?|bendiciones|(?:muchas\s+)?gracias|besos|slds|regards|thanks|cheers)"
    r"(?![\w'])|(?:^|(?<=[^\w\s,;:'\"\-]))\s*[\u2014\u2013~\-]+)[\s.:,!]*"
    r"((?:(?:el|la)\s+)?(?:(?:dra?|sra?|srta|ing|lic|prof|mtr[oa]|arq)\.\s*)?"
    r"[^\W\d_]+(?:['\-][^\W\d_]+)*(?:[ \t]+[^\W\d_]+(?:['\-][^\W\d_]+)*){0,4})"
    r"[^\w]*$"
)
_LEADING_TITLE = re.compile(r"(?:(?:el|la)\s+)?(?:dra?|sra?|srta|ing|lic|prof|mtr[oa]|arq)\.\s*")
_GREETINGS = frozenset(
    ["hola", "holaa", "buenas", "buenos", "buen", "dias", "tardes", "noches", "hey", "hi"]
    + ["hello", "saludos", "que", "tal", "ola", "epa", "ey", "wenas", "buenass"]
)
#: Quoted or injected structured data: a JSON object, a "system:" line, <system> tags.
_INJECTED = re.compile(
    r"\{\s*[\"'][^\"'{}]*[\"']\s*:(?:[^{}]|\{[^{}]*\})*(?:\}|$)"
    r"|<\s*(system|assistant|developer|instructions?|sistema)\b[^>]*>.*?(?:<\s*/\s*\1\s*>|$)"
    r"|<\s*/?\s*(?:user|system|assistant|developer|instructions?|sistema)\s*>"
    r"|(?:^|(?<=[\n.!?;>\]}\"]))[ \t]*[\[#*(]*[ \t]*(?:system|sistema|assistant|asistente"
    r"|developer|admin)[ \t]*[\]#*)]*[ \t]*:[^\n]*",
    re.S,
)
_NAME_SPAN = re.compile(r"[\s:\-]*([^,.;:!?¡¿()\[\]{}<>\"\n\d@/=]*)")
_WORD = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")
_CLAUSE = re.compile(r"[,.;:!?\n]+")
_FILLERS = frozenset(
    ["si", "claro", "ok", "okay", "hola", "buenas", "dale", "sure", "yes", "vale", "bueno"]
    + ["pues", "jaja", "ya", "con"]
)
_PARTICLES = frozenset(["de", "del", "la", "las", "los"])
_MAX_NAME_WORDS = 4

_EMAIL = re.compile(r"[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+")
#: A spelled-out address: "ana punto ruiz arroba gmail punto com", "ana_r (at) mail . com".
_LOCAL_SEP = r"(?:[._\-]|[ \t]+[._\-][ \t]+|\s+(?:punto|dot|guion\s+bajo|underscore|guion|dash)\s+)"
_DOMAIN_SEP = r"(?:\.|[ \t]+\.[ \t]+|\s+(?:punto|dot)\s+|\s*[(\[](?:punto|dot)[)\]]\s*)"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![\w.@%+\-])([a-z0-9%+]+(?:{_LOCAL_SEP}[a-z0-9%+]+)*)"
    r"(?:\s*[(\[{<]\s*(?:arroba|at)\s*[)\]}>]\s*|\s+arroba\s+|\s+@\s*|\s*@\s+)"
    rf"([a-z0-9\-]+(?:{_DOMAIN_SEP}[a-z0-9\-]+)+)(?![\w@])"
)
_SPOKEN_SEP = re.compile(
    r"\s*(?:(\.|punto|dot)|(_|guion\s+bajo|underscore)|(-|guion|dash)|[(\[](?:punto|dot)[)\]])\s*"
)
_PHONE = re.compile(r"(?<![\w+@/$€])(?:\+[ \t]?)?\(?\d+\)?(?:[ \t\-.]{1,2}\(?\d+\)?)*(?![\w@])")
_NOT_PHONE_AFTER = re.compile(
    r"\s*(?:pesos|dolares|soles|euros|usd|eur|mil|millones|bs|lucas|anos|seguidores|personas|%)\b"
)
_THOUSANDS = re.compile(r"\d{1,3}(?:[.,]\d{3})+")
_DATE = re.compile(r"\d{1,2}[\-.]\d{1,2}[\-.]\d{2,4}")
_PHONE_CONTEXT = re.compile(r"\b(?:numero|telefono|tel|cel|celular|movil|whatsapp|fono|llam)")


def _take_name(
    words: list[str], strength: int, lower_ok: bool = False, whole: bool = False
) -> str | None:
    """The longest name at the start of ``words``, or None if they do not start with one.

    ``lower_ok``: a weak cue may take a name typed in lower case (the visitor was just asked
    for it); ``whole``: the name must use up every word.
    """
    i = 0
    while i < len(words) - 1 and (
        fold(words[i]).rstrip(".") in lexicon.TITLES
        or (
            i + 2 < len(words)
            and fold(words[i]) in ("el", "la")
            and fold(words[i + 1]).rstrip(".") in lexicon.TITLES
        )
    ):
        i += 1
    taken: list[str] = []
    capitalised = False
    while i < len(words) and sum(fold(w) not in _PARTICLES for w in taken) < _MAX_NAME_WORDS:
        word, folded = words[i], fold(words[i])
        if not _WORD.fullmatch(word):
            break
        if not taken:
            if folded in lexicon.NOT_NAMES or folded in lexicon.STOP_WORDS:
                return None
            if _OCCUPATION.fullmatch(folded) or folded in lexicon.TITLES:
                return None
            capitalised = word[0].isupper()
            lower = strength == WEAK and not lower_ok
            if not capitalised and lower and folded not in lexicon.FIRST_NAMES:
                return None
        elif folded in _PARTICLES and capitalised:
            nxt = i + 1
            while nxt < len(words) and fold(words[nxt]) in _PARTICLES:
                nxt += 1
            if nxt < len(words) and words[nxt][:1].isupper():
                taken.extend(words[i:nxt])
                i = nxt
                continue
            break
        elif folded in lexicon.STOP_WORDS or (capitalised and not word[0].isupper()):
            break
        taken.append(word)
        i += 1
    if whole and i < len(words):
        return None
    return " ".join(taken) or None


def _name_after(text: str, folded: str, end: int, strength: int, lower_ok: bool) -> str | None:
    if title := _TITLE_DOT.match(folded, end):
        end = title.end()
    span = _NAME_SPAN.match(text, end)
    return _take_name(span.group(1).split(), strength, lower_ok) if span else None


def _name_here(text: str, folded: str, lower_ok: bool) -> tuple[int, str] | None:
    """ "Fernando aquí": the words that open a clause before "aquí" / "por aquí", if a name."""
    for m in _HERE.finditer(folded):
        before = folded[: m.start()].rstrip()
        words = text[m.start(1) : m.end(1)].split()
        while words and fold(words[0]) in _GREETINGS:
            words.pop(0)
        if not words:
            continue
        prev = before.rsplit(None, 1)[-1] if before else ""
        if prev and prev[-1].isalnum() and prev not in _GREETINGS:
            continue  # mid-clause: "vivo en Lima aquí"
        if name := _take_name(words, WEAK, lower_ok, whole=True):
            return m.start(), name
    return None


def _sign_off(text: str, folded: str) -> tuple[int, str] | None:
    """A name signing off the message: "gracias, att: Ana Ruiz", "un saludo, Mari", "- Beto"."""
    start = max(0, len(folded) - 120)
    m = _SIGN_OFF.search(folded, start)
    if not m:
        return None
    begin = m.start(1)
    if title := _LEADING_TITLE.match(folded, begin):
        begin = title.end()
    name = _take_name(text[begin : m.end(1)].split(), WEAK, whole=True)
    return (m.start(), name) if name else None


def _name_reply(text: str) -> str | None:
    """A bare reply to "¿Cómo te llamas?": its first non-filler clause, if wholly a name."""
    for clause in _CLAUSE.split(text):
        words = clause.split()
        while words and fold(words[0]) in _FILLERS:
            words.pop(0)
        if not words:
            continue
        return _take_name(words, WEAK, whole=True)
    return None


def _names(text: str, folded: str, asked: bool) -> list[tuple[int, int, str]]:
    """Candidate names in one visitor message as (strength, position, name)."""
    found = []
    for cue in _STRONG_CUE.finditer(folded):
        if name := _name_after(text, folded, cue.end(), STRONG, False):
            found.append((STRONG, cue.start(), name))
    for cue in _WEAK_CUE.finditer(folded):
        if _NEGATED.search(folded, 0, cue.start()):
            continue
        if name := _name_after(text, folded, cue.end(), WEAK, asked):
            found.append((WEAK, cue.start(), name))
    if ("aqu" in folded or "aca" in folded or "here" in folded) and (
        here := _name_here(text, folded, asked)
    ):
        found.append((WEAK, *here))
    if signed := _sign_off(text, folded):
        found.append((WEAK, *signed))
    if asked and not found and (name := _name_reply(text)):
        found.append((WEAK, 0, name))
    return found


def _spoken_part(raw: str) -> str:
    def sep(m: re.Match[str]) -> str:
        return "_" if m.group(2) else "-" if m.group(3) else "."

    return _SPOKEN_SEP.sub(sep, raw)


def _emails(text: str, folded: str) -> list[str]:
    found = [m.group(0) for m in _EMAIL.finditer(text)]
    if "arroba" in folded or "at" in folded or " @" in folded or "@ " in folded:
        for m in _SPOKEN_EMAIL.finditer(folded):
            before = folded[: m.start()].rstrip()
            prev = before.rsplit(None, 1)[-1] if before else ""
            if prev and prev[-1].isalnum() and prev not in lexicon.EMAIL_LEAD:
                found.append("")  # the address may start earlier: none rather than a part
                continue
            found.append(f"{_spoken_part(m.group(1))}@{_spoken_part(m.group(2))}")
    return found


def _mask_injected(text: str, folded: str) -> tuple[str, str]:
    """Blank out quoted/injected structured data (positions kept): it is not the visitor's."""
    if not ("{" in folded or "<" in folded or ":" in folded):
        return text, folded
    spans = [m.span() for m in _INJECTED.finditer(folded)]
    for a, b in reversed(spans):
        text = text[:a] + " " * (b - a) + text[b:]
        folded = folded[:a] + " " * (b - a) + folded[b:]
    return text, folded


def _phones(text: str, folded: str) -> list[str]:
    found = []
    context = bool(_PHONE_CONTEXT.search(folded))
    for m in _PHONE.finditer(text):
        raw = m.group(0).strip()
        digits = sum(c.isdigit() for c in raw)
        if digits < 7 or _DATE.fullmatch(raw) or _NOT_PHONE_AFTER.match(folded, m.end()):
            continue
        if _THOUSANDS.fullmatch(raw) and not context:
            continue
        found.append(raw)
    return found


def _intent(folded: str) -> bool:
    return any(not _NEGATED.search(folded, 0, m.start()) for m in _INTENT.finditer(folded))


def _archetype(folded: str) -> str | None:
    """The archetype whose cues weigh most (at least 2); ties go to the earlier one."""
    best, best_score = None, 1
    for name, cues in _ARCHETYPES.items():
        score = sum(w * len({m.group(0) for m in rx.finditer(folded)}) for w, rx in cues)
        if score > best_score:
            best, best_score = name, score
    return best


def _occupation(text: str, folded: str) -> str | None:
    for cue in _OCCUPATION_CUE.finditer(folded):
        if m := _OCCUPATION.match(folded, cue.end()):
            return text[m.start() : m.end()]
    return None


def _last(values) -> str | None:
    """The last value that survived normalisation: visitors correct themselves."""
    kept = [v for v in values if v]
    return kept[-1] if kept else None


class RulesExtractor:
    """Keyword and pattern extraction; never raises for any list of messages."""

    name = "rules"

    def extract(self, messages: Messages) -> ExtractionResult:
        names: list[tuple[int, int, int, str]] = []
        emails: list[str] = []
        phones: list[str] = []
        texts: list[str] = []
        folds: list[str] = []
        asked = False
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                continue
            text = unicodedata.normalize("NFC", message["content"])
            folded = fold(text)
            if message.get("role") != "user":
                asked = bool(_NAME_QUESTION.search(folded))
                continue
            text, folded = _mask_injected(text, folded)
            names += [(s, index, pos, n) for s, pos, n in _names(text, folded, asked)]
            emails += _emails(text, folded)
            phones += _phones(text, folded)
            texts.append(text)
            folds.append(folded)
            asked = False

        visitor = "\n".join(folds)
        raw = {
            "nombre": max(names)[3] if names else None,
            "email": _last(normalise_email(e) for e in emails),
            "telefono": _last(normalise_phone(p) for p in phones),
            "ocupacion": _occupation("\n".join(texts), visitor),
            "objeciones": [o for o, rx in _OBJECTIONS.items() if rx.search(visitor)],
            "arquetipo": _archetype(visitor),
        }
        prospect = normalise(raw)
        interest = (
            2 * bool(prospect.nombre)
            + 3 * bool(prospect.telefono)
            + 1.5 * bool(prospect.email)
            + 2 * _intent(visitor)
            - 3 * bool(_REJECTION.search(visitor))
        )
        return ExtractionResult(normalise({**prospect.to_dict(), "nivel_interes": interest}))
