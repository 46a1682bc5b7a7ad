"""The offline extractor: deterministic keyword and pattern rules, Spanish-aware.

It reads only the visitor's messages for personal data (an assistant message may still tell
it that the next reply is the visitor's name, as in "¿Cómo te llamas?" -> "Diego").  Keywords
are matched on *folded* text (lower case, accents removed) whose character positions equal
the original's, so a name found after "me llamo" is cut from the original with its accents.
Structured data pasted into a visitor message (a JSON object, a "system:" line, <system>
tags, field assignments such as "telefono = ..." in instruction-like text) is blanked out
first: it is quoted or injected, not something the visitor told us.  A self-correction of the
name ("bueno, Brenda Saldaña", "perdón, es ruiz con z") beats the name it corrects, a given
name beats a nickname, someone else's number ("el de mi vecina") is skipped, and a stated
preference between two numbers ("mejor el cel") is honoured.

Interest follows SPEC section 6's rubric exactly: +2 name, +3 phone, +1.5 email, +2 intent
words, -3 "no me interesa", clamped to 0..10.  All patterns are compiled at import; a typical
conversation takes well under a millisecond.

Cost is linear in the text read, whatever the text: only the newest ``max_chars`` characters
are read (:func:`~.base.newest`), and no pattern may backtrack super-linearly.  Python's ``re``
guarantees nothing, so every pattern here is written for it: a pattern searched through the
text can only start where its first token starts (a lookbehind rejects positions inside a
run it would scan again), runs are taken possessively (``++``, ``*+``) where giving back
cannot help, and what follows a cue is read through a bounded window (``_REACH``), never to
the end of the text.  ``tests/extraction/test_linear_time.py`` feeds 1 MiB adversarial inputs.
"""

from __future__ import annotations

import re
import unicodedata

from ..config import DEFAULT_MAX_EXTRACT_CHARS, DEFAULT_PHONE_REGION
from . import lexicon
from .base import ExtractionResult, Messages, newest
from .prospect import normalise, normalise_email, normalise_phone

#: How sure a name cue is: a self-correction ("bueno, Brenda Saldaña") beats "me llamo", which
#: beats "soy" and bare replies, which beat a nickname ("me dicen Cata").
CORRECTED, STRONG, WEAK, NICK = 4, 3, 2, 1


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


def _top_level(body: str) -> list[str]:
    """The alternatives of a regex body, split at its top-level ``|``."""
    parts, current, depth, in_class, escaped = [], [], 0, False, False
    for ch in body:
        if escaped or in_class:
            in_class = in_class and not (ch == "]" and not escaped)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            in_class = True
        elif ch in "()":
            depth += 1 if ch == "(" else -1
        elif ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _alternation(parts: tuple[str, ...] | str) -> re.Pattern[str]:
    """Whole words or phrases (alternatives that each start with a word character).

    Built for speed as well as linear time: alternatives that start with a plain letter are
    grouped by it, and each group checks the word boundary just *after* its letter
    (``c(?<![\\w']c)...``).  A pattern that then starts with literals only lets ``re`` skip
    in C every position whose character begins no alternative (a lookbehind first would be
    evaluated at every position: ~30 ns a character, times 50 lexicon patterns).  Order is
    kept within a letter; other alternatives follow, with the boundary checked first.
    """
    groups: dict[str, list[str]] = {}
    rest = []
    for alt in _top_level(parts if isinstance(parts, str) else "|".join(parts)):
        if len(alt) > 1 and alt[0].isalnum() and alt[1] not in "?*+{":
            groups.setdefault(alt[0], []).append(alt[1:])
        else:
            rest.append(alt)
    body = [f"{c}(?<![\\w']{c})(?:{'|'.join(tails)})" for c, tails in groups.items()]
    if rest:
        body.append(f"(?<![\\w'])(?=\\w)(?:{'|'.join(rest)})")
    return re.compile(f"(?:{'|'.join(body)})(?![\\w'])")


_INTENT = _alternation(lexicon.INTENT)
_REJECTION = _alternation(lexicon.REJECTION)
_NEGATED = re.compile(r"(?:\bno|\bni|\btampoco)\s+(?:me\s+|lo\s+)?$")
#: Characters read around a cue: a negation before it, a name or an address next to it.
_REACH = 96
_NEGATION_REACH = 24
_MAX_NAME_WORD = 40  #: characters; a longer "word" is not part of a name
_MAX_CONTACTS = 20  #: the last emails / phone numbers given that are checked
_OBJECTIONS = {name: _alternation(parts) for name, parts in lexicon.OBJECTIONS.items()}
#: An objection cue negated just before it: "no es caro", "no desconfío", "ya sé que no es
#: multinivel", "no creo que sea una estafa", "no me falta tiempo".
_OBJECTION_NEGATED = re.compile(
    r"(?<!uy )(?<!ay )(?<!ah )(?<!uf )(?<!uff )(?<!pues )(?<!nah )"  # "uy no, está caro"
    r"\b(?:no|nunca|tampoco)\s+(?:(?:es|son|sera|seria|fue|esta|estan|estoy|ando|parece"
    r"|me\s+parece|lo\s+veo|creo\s+que\s+sea|pienso\s+que\s+sea|suena\s+a|huele\s+a|es\s+por"
    r"|tengo\s+problema\s+con|me\s+preocupa|me\s+asusta|me\s+importa)\s+)?"
    r"(?:(?:un|una|tan|muy|nada|para\s+nada|el|la|lo|los|las|del|de|por)\s+){0,3}$"
)
#: An objection dismissed right after it, in the same sentence: "caro pero vale la pena",
#: "la plata no es problema", "eso no me asusta", "tiempo me sobra".
_OBJECTION_DISMISSED = re.compile(
    r"[^.!?\n;]{0,40}?(?<![\w'])(?:no\s+(?:es|son|sera|seria|representa)\s+(?:un\s+|ningun\s+"
    r"|mucho\s+|mayor\s+)?(?:problema|impedimento|obstaculo|inconveniente|excusa|lio)"
    r"|no\s+me\s+(?:preocupa|asusta|importa|molesta|detiene|frena)|me\s+sobra|de\s+sobra"
    r"|no\s+hay\s+(?:problema|lio|rollo)|da\s+igual|vale\s+la\s+pena|lo\s+vale|me\s+organizo"
    r"|me\s+las\s+arreglo|lo\s+puedo\s+pagar|si\s+(?:lo\s+)?puedo\s+pagar)(?![\w'])"
)
_STARTS_NEGATED = re.compile(r"(?:no|ni|sin|nunca)\b")
_SENTENCE_END = re.compile(r"[.!?\n;]")
#: A rejection made conditional: "si es multinivel no me interesa", "no me interesa si hay que
#: reclutar": a condition, not a rejection of the offer.
_CONDITION = re.compile(
    r"(?<![\w'])(?:si|solo\s+si|en\s+caso\s+de\s+que|a\s+menos\s+que|salvo\s+que|if)\s+\w"
)
_CONDITION_AFTER = re.compile(
    r"\s*,?\s*(?:si|solo\s+si|en\s+caso\s+de\s+que|a\s+menos\s+que|salvo\s+que|if)\s+\w"
)
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
    r"\b(?:soy|i'?m|i\s+am|this\s+is|(?:te|le|les)\s+(?:habla|escribe)|habla(?:\s+(?:el|la))?)\b"
)
#: A nickname: taken only when the visitor gives no other name ("catalina pero me dicen cata").
_NICK_CUE = re.compile(
    r"\b(?:(?:todos\s+|mis\s+amig[oa]s\s+)?me\s+(?:dicen|llaman|conocen\s+como)"
    r"|(?:puedes|puede|pueden)\s+llamarme|llamame|call\s+me)\b"
)
#: "Brenda, bueno Brenda Saldaña", "perdón, es Ruiz": the visitor corrects the name just given.
_CORRECTION = re.compile(
    r"(?<![\w'])(?:(bueno|o\s+sea)|digo|mejor\s+dicho|quise\s+decir|quiero\s+decir|corrijo"
    r"|me\s+equivoque|perdon|perdona|disculpa|sorry|en\s+realidad)"
    r"(?:[\s,:]+(?:es|soy|seria|se\s+escribe))?(?![\w'])[\s,:]*"
)
#: "ruiz con z", "Mariela con ele": a word spelled out, correcting a word of the name.
_SPELLED = re.compile(
    r"(?<![\w'])([^\W\d_]{3,})\s+con\s+(?:una?\s+)?(?:doble\s+)?(?:[a-z]|zeta|ese|ce|ge|jota"
    r"|be|ve|uve|ye|i\s+griega|equis|hache|ele|elle|tilde|acento)(?![\w'])"
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
    r"|<\s*+(system|assistant|developer|instructions?|sistema)\b[^<>]*+>.*?(?:<\s*/\s*\1\s*>|$)"
    r"|<\s*/?\s*(?:user|system|assistant|developer|instructions?|sistema)\s*>"
    r"|(?:^|(?<=[\n.!?;>\]}\"]))[ \t]*+[\[#*(]*+[ \t]*+(?:system|sistema|assistant|asistente"
    r"|developer|admin)[ \t]*+[\]#*)]*+[ \t]*+:[^\n]*+",
    re.S,
)
_FIRST_WORD = re.compile(r"[\s:\-]*+([^\W\d_]++)")
_NOT_FIRST_WORDS = (lexicon.STOP_WORDS | lexicon.NOT_NAMES) - lexicon.TITLES - {"el", "la"}
_NAME_SPAN = re.compile(r"[\s:\-]*([^,.;:!?¡¿()\[\]{}<>\"\n\d@/=]*)")
_WORD = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")
_CLAUSE_TEXT = re.compile(r"[^,.;:!?\n]++")
_FILLERS = frozenset(
    ["si", "claro", "ok", "okay", "hola", "buenas", "dale", "sure", "yes", "vale", "bueno"]
    + ["pues", "jaja", "ya", "con"]
)
_PARTICLES = frozenset(["de", "del", "la", "las", "los"])
_NOT_COUNTED = _PARTICLES | {"y"}
#: A connector left at the end of a reply cut before a nickname: "catalina pero".
_TRAILING_CONNECTOR = re.compile(r"(?<![\w'])(?:pero|aunque|y|o|mas)$")
_REPLY_REACH = 300  #: characters; a longer clause is not a bare name
_NOT_NAME_ENDINGS = ("ende", "enda", "mente", "ando", "iendo", "amos", "emos", "imos", "ame")
_MAX_NAME_WORDS = 4

_EMAIL = re.compile(r"(?<![\w.%+\-])[\w.%+\-]++@[\w\-]++(?:\.[\w\-]++)+")
#: A spelled-out address: "ana punto ruiz arroba gmail punto com", "ana_r (at) mail . com".
_LOCAL_SEP = r"(?:[._\-]|[ \t]+[._\-][ \t]+|\s+(?:punto|dot|guion\s+bajo|underscore|guion|dash)\s+)"
_DOMAIN_SEP = r"(?:\.|[ \t]+\.[ \t]+|\s+(?:punto|dot)\s+|\s*[(\[](?:punto|dot)[)\]]\s*)"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![\w.@%+\-])([a-z0-9%+]{{1,64}}(?:{_LOCAL_SEP}[a-z0-9%+]{{1,64}}){{0,8}})"
    r"(?:\s*[(\[{<]\s*(?:arroba|at)\s*[)\]}>]\s*|\s+arroba\s+|\s+@\s*|\s*@\s+)"
    rf"([a-z0-9\-]{{1,63}}(?:{_DOMAIN_SEP}[a-z0-9\-]{{1,63}}){{1,6}})(?![\w@])"
)
_SPOKEN_SEP = re.compile(
    r"\s*(?:(\.|punto|dot)|(_|guion\s+bajo|underscore)|(-|guion|dash)|[(\[](?:punto|dot)[)\]])\s*"
)
#: A number: digit groups joined by one or two separators.  It starts only where a chain of
#: groups starts (not after "1-" or "1 (") and takes the whole chain, so "1-1-1-..." is read once.
_PHONE = re.compile(
    r"(?<![\w+@/$€])(?<![\d)][ \t\-.])(?<![\d)][ \t\-.]{2})(?<![\d)][ \t\-.]\()"
    r"(?<![\d)][ \t\-.]{2}\()(?:\+[ \t]?)?+\(?+\d++\)?+(?:[ \t\-.]{1,2}+\(?+\d++\)?+)*+(?![\w@])"
)
_NOT_PHONE_AFTER = re.compile(
    r"\s*(?:pesos|dolares|soles|euros|usd|eur|mil|millones|bs|lucas|anos|seguidores|personas|%)\b"
)
_THOUSANDS = re.compile(r"\d{1,3}(?:[.,]\d{3})+")
_DATE = re.compile(r"\d{1,2}[\-.]\d{1,2}[\-.]\d{2,4}")
_PHONE_CONTEXT = re.compile(r"\b(?:numero|telefono|tel|cel|celular|movil|whatsapp|fono|llam)")
_PHONE_WORD = (
    r"(?:numero|telefono|tel|cel|celu|celular|movil|whatsapp|whats|wsp|wasap|fono|contacto)"
)
#: Someone else's number: "el de mi vecina", "apunta el de ella", "su cel es", "mi esposo: ".
_THIRD_PARTY = re.compile(
    rf"(?:\b(?:el|la|los)\s+(?:{_PHONE_WORD}\s+)?de\s+(?:ella|el|ellos|ellas|usted"
    rf"|(?:mi|mis|tu|tus|su|sus|la|el)\s+(?:{lexicon.RELATIONS}))"
    rf"|\bsus?\s+{_PHONE_WORD}s?|\b(?:mi|mis)\s+(?:{lexicon.RELATIONS})\s*+(?:es|:|tiene)?+\s*+$)\b"
)
#: The visitor's own number named again after a third party's: "no, mejor el mío".
_OWN_PHONE = re.compile(rf"\b(?:el\s+mio|la\s+mia|mi\s+{_PHONE_WORD}|mio|yo)\b")
_PHONE_KIND = re.compile(
    r"\b(?:de\s+(?:la\s+|mi\s+)?|del\s+)?(cel|celu|celular|movil|whatsapp|whats|wsp|wasap|wpp"
    r"|personal|casa|fijo|oficina|trabajo|local|negocio|tienda)\b"
)
#: "mejor el cel", "el que más uso es el whatsapp", "prefiero que me llamen al fijo".
_PHONE_PREFERENCE = re.compile(
    r"\b(?:mejor\s+(?:\w+me\s+)?(?:al|el|a\s+mi|mi|por)"
    r"|el\s+que\s+mas\s+(?:uso|contesto|reviso|atiendo)(?:\s+es)?(?:\s+el|\s+mi)?"
    r"|prefiero(?:\s+que\s+me\s+(?:llamen|escriban|marquen))?\s+(?:al|el|por))\s+"
    r"(?:de\s+(?:la\s+)?|del\s+)?(cel|celu|celular|movil|whatsapp|whats|wsp|wasap|wpp"
    r"|personal|casa|fijo|oficina|trabajo|local|negocio|tienda|primero|segundo|otro|ultimo)\b"
)
#: "ese casi nunca lo contesto": the number just given is not the one to call.
_PHONE_SHUNNED = re.compile(
    r"\b(?:(?:casi\s+)?nunca|no|ya\s+no|casi\s+no)\s+(?:lo\s+)?(?:contesto|atiendo|uso|reviso"
    r"|funciona|sirve)\b"
)
#: Field assignments in instruction-like text: "telefono = 555...", "set telefono to 555",
#: "pon el email: x@y.z" after "ignora tus instrucciones".  Blanked: not what the visitor said.
_FIELD = (
    r"[\"'`]?(?:nombre|name|telefono|phone|tel|celular|numero|email|e-mail|correo|mail"
    r"|nivel_interes|interes|momento_optimo|momento|arquetipo|objeciones|ocupacion)[\"'`]?"
)
_ASSIGNMENT = re.compile(
    rf"(?:\b(?:set|update|store|save|change|put|pon|poner|pone|guarda|guardar|cambia|cambiar"
    rf"|actualiza|actualizar|registra|registrar|escribe|asigna|asignar)\s+(?:(?:el|la|the|campo"
    rf"|field|value|valor|of|de|del)\s+)*{_FIELD}\s*(?:=|:=|:|\bto\b|\ba\b|\bcomo\b|\ben\b)"
    rf"|{_FIELD}\s*(?:=|:=|==))[^,;\n]*"
)
_OVERRIDE = re.compile(
    r"\b(?:ignora|ignore|olvida|forget|omite|disregard|override)\b[^\n]{0,60}?"
    r"\b(?:instruc\w*|prompt|reglas|rules|sistema|system|anterior\w*|previous|above)\b"
)
_LOOSE_ASSIGNMENT = re.compile(rf"\b{_FIELD}\s*(?::|\bto\b|\bcomo\b)[^,;\n]*")


def _take_name(
    words: list[str], strength: int, lower_ok: bool = False, whole: bool = False
) -> str | None:
    """The longest name at the start of ``words``, or None if they do not start with one.

    ``lower_ok``: a weak cue may take a name typed in lower case (the visitor was just asked
    for it); ``whole``: the name must use up every word.
    """
    i = 0
    while (
        i < len(words) - 1
        and (
            fold(words[i]).rstrip(".") in lexicon.TITLES
            # "soy la Coni", "soy el Beto": an article before a capitalised name
            or (fold(words[i]) in ("el", "la") and words[i + 1][:1].isupper())
            or (
                i + 2 < len(words)
                and fold(words[i]) in ("el", "la")
                and fold(words[i + 1]).rstrip(".") in lexicon.TITLES
            )
        )
    ):
        i += 1
    taken: list[str] = []
    capitalised = False
    while i < len(words) and sum(fold(w) not in _NOT_COUNTED for w in taken) < _MAX_NAME_WORDS:
        word, folded = words[i], fold(words[i])
        if len(word) > _MAX_NAME_WORD or not _WORD.fullmatch(word):
            break
        if not taken:
            if folded in lexicon.NOT_NAMES or folded in lexicon.STOP_WORDS:
                return None
            if _OCCUPATION.fullmatch(folded) or folded in lexicon.TITLES:
                return None
            capitalised = word[0].isupper()
            lower = strength < STRONG and not lower_ok
            if not capitalised and lower and folded not in lexicon.FIRST_NAMES:
                return None
        elif folded in _PARTICLES:
            # "María de los Ángeles", "maria del carmen", "Juan De la Cruz"; not "juan de lima"
            nxt = i + 1
            while nxt < len(words) and fold(words[nxt]) in _PARTICLES:
                nxt += 1
            if nxt < len(words) and (
                (capitalised and words[nxt][:1].isupper()) or fold(words[nxt]) in lexicon.NAME_TAILS
            ):
                taken.extend(words[i:nxt])
                i = nxt
                continue
            break
        elif folded == "y" and capitalised and len(taken) >= 2:
            # "José Ortega y Gasset": a surname joined by "y", never a second person's name
            nxt = words[i + 1] if i + 1 < len(words) else ""
            other = fold(nxt)
            if (
                nxt[:1].isupper()
                and _WORD.fullmatch(nxt)
                and other not in lexicon.FIRST_NAMES
                and other not in lexicon.STOP_WORDS
                and other not in lexicon.NOT_NAMES
            ):
                taken.extend(words[i : i + 2])
                i += 2
                continue
            break
        elif folded in lexicon.STOP_WORDS or (capitalised and not word[0].isupper()):
            break
        taken.append(word)
        i += 1
    if whole and i < len(words):
        return None
    return " ".join(taken) or None


def _negated(folded: str, pos: int) -> bool:
    """Whether a negation ("no", "ni", "tampoco", "no me") comes just before ``pos``."""
    return bool(_NEGATED.search(folded, max(0, pos - _NEGATION_REACH), pos))


def _previous_word(folded: str, pos: int) -> str:
    """The word just before ``pos`` (read within ``_REACH`` characters), or ""."""
    words = folded[max(0, pos - _REACH) : pos].split()
    return words[-1] if words else ""


def _span_words(text: str, pos: int) -> list[str]:
    """The words of the clause starting at ``pos``, read within ``_REACH`` characters.

    A word the window cuts is left out, so a long clause cannot pass for a short name.
    """
    limit = pos + _REACH
    span = _NAME_SPAN.match(text, pos, limit)
    words = span.group(1).split() if span else []
    if words and span.end() == limit < len(text) and not text[limit - 1].isspace():
        words.pop()
    return words


def _name_after(text: str, folded: str, end: int, strength: int, lower_ok: bool) -> str | None:
    if title := _TITLE_DOT.match(folded, end, end + _REACH):
        end = title.end()
    # Most cues are followed by a word that cannot start a name ("soy de", "soy muy"): a
    # shortcut with the answer _take_name would give, since the cue may repeat thousands of times.
    peek = _FIRST_WORD.match(folded, end, end + _REACH)
    if (
        peek
        and peek.group(1) in _NOT_FIRST_WORDS
        and (peek.end() == len(folded) or folded[peek.end()].isspace())
    ):
        return None
    return _take_name(_span_words(text, end), strength, lower_ok)


def _name_here(text: str, folded: str, lower_ok: bool) -> tuple[int, str] | None:
    """ "Fernando aquí": the words that open a clause before "aquí" / "por aquí", if a name."""
    for m in _HERE.finditer(folded):
        words = text[m.start(1) : m.end(1)].split()
        while words and fold(words[0]) in _GREETINGS:
            words.pop(0)
        if not words:
            continue
        prev = _previous_word(folded, m.start())
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


def _plain_reply_name(words: list[str], minimum: int = 2) -> bool:
    """Whether a lower-case reply of two to four words may be a name ("brayan stiven")."""
    if not minimum <= len(words) <= _MAX_NAME_WORDS:
        return False
    for word in words:
        folded = fold(word)
        if (
            len(folded) < 2
            or not _WORD.fullmatch(word)
            or folded in lexicon.NOT_NAMES
            or folded in lexicon.STOP_WORDS
            or folded in lexicon.NOT_REPLY_NAMES
            or _OCCUPATION.fullmatch(folded)
            or folded.endswith(("me", "nos", "melo", "mela"))  # "cuentame", "dinos"
        ):
            return False
    return True


def _name_reply(text: str) -> str | None:
    """A bare reply to "¿Cómo te llamas?": its first non-filler clause, if wholly a name.

    A nickname that follows is cut off ("catalina pero me dicen cata" -> "catalina"), and a
    lower-case reply of a few plain words is taken ("brayan stiven").
    """
    for match in _CLAUSE_TEXT.finditer(text):
        clause = match.group(0).strip()
        if not clause:
            continue
        if len(clause) > _REPLY_REACH:
            return None
        if nick := _NICK_CUE.search(fold(clause)):
            clause = clause[: nick.start()].rstrip(" \t\n,")
            if tail := _TRAILING_CONNECTOR.search(fold(clause)):
                clause = clause[: tail.start()].rstrip(" \t\n,")
        words = clause.split()
        first = 0
        while first < len(words) and fold(words[first]) in _FILLERS:
            first += 1
        words = words[first:]
        if not words:
            continue
        if name := _take_name(words, WEAK, whole=True):
            return name
        if _plain_reply_name(words):
            return _take_name(words, WEAK, lower_ok=True, whole=True)
        if (  # the whole reply is one plain word that is not a verb or adverb: "jhonatan"
            len(words) == 1
            and len(_WORD.findall(text, 0, _REPLY_REACH)) == 1
            and len(words[0]) >= 3
            and not fold(words[0]).endswith(_NOT_NAME_ENDINGS)
            and _plain_reply_name(words, minimum=1)
        ):
            return _take_name(words, WEAK, lower_ok=True, whole=True)
        return None
    return None


def _similar(a: str, b: str) -> bool:
    """Two spellings of one word of a name: same first letter, at most two edits apart."""
    if a == b:
        return True
    if len(a) < 3 or len(b) < 3 or a[0] != b[0] or abs(len(a) - len(b)) > 2:
        return False
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1] <= 2


def _respelled(base: str, new: list[str]) -> str | None:
    """``base`` with its words replaced by the re-spelled ``new`` ones, if each matches one."""
    words = base.split()
    folded = [fold(w) for w in words]
    used: set[int] = set()
    for word in new:
        target = fold(word)
        hits = [i for i, f in enumerate(folded) if i not in used and _similar(f, target)]
        if not hits:
            return None
        used.add(hits[-1])
        words[hits[-1]] = word
    return " ".join(words)


def _corrections(
    text: str, folded: str, base: str | None, asked: bool
) -> list[tuple[int, int, str]]:
    """Self-corrections of the name ``base`` already given (in this message or before).

    "Brenda, bueno Brenda Saldaña" / "digo, Juan Carlos": the corrected name wins.  "perdón, es
    ruiz con z": a re-spelled word replaces its look-alike in ``base``.  A bare "bueno" / "o sea"
    counts only when the new name restates or re-spells the old one.
    """
    if not base:
        return []
    found = []
    first = fold(base.split()[0])
    for cue in _CORRECTION.finditer(folded):
        words = _span_words(text, cue.end())
        if not words:
            continue
        lower_ok = asked or _similar(fold(words[0]), first)
        name = _take_name(words, WEAK, lower_ok)
        if not name:
            continue
        if respelled := _respelled(base, name.split()):
            found.append((CORRECTED, cue.start(), respelled))
        elif fold(name.split()[0]) == first or (
            not cue.group(1) and name[:1].isupper() and _take_name(words, WEAK, whole=True)
        ):  # an explicit cue and a new name filling the clause: "perdón, es Mariela Soto"
            found.append((CORRECTED, cue.start(), name))
    if " con " in folded:
        for m in _SPELLED.finditer(folded):
            if respelled := _respelled(base, [text[m.start(1) : m.end(1)]]):
                found.append((CORRECTED, m.start(), respelled))
    return found


def _names(text: str, folded: str, asked: bool, prior: str | None) -> list[tuple[int, int, str]]:
    """Candidate names in one visitor message as (strength, position, name).

    ``prior``: the best name from earlier messages, which this one may correct.
    """
    found = []
    for cue in _STRONG_CUE.finditer(folded):
        if name := _name_after(text, folded, cue.end(), STRONG, False):
            found.append((STRONG, cue.start(), name))
    for cue in _WEAK_CUE.finditer(folded):
        if _negated(folded, cue.start()):
            continue
        if name := _name_after(text, folded, cue.end(), WEAK, asked):
            found.append((WEAK, cue.start(), name))
    for cue in _NICK_CUE.finditer(folded):
        if _negated(folded, cue.start()):
            continue
        if name := _name_after(text, folded, cue.end(), NICK, asked):
            found.append((NICK, cue.start(), name))
    if ("aqu" in folded or "aca" in folded or "here" in folded) and (
        here := _name_here(text, folded, asked)
    ):
        found.append((WEAK, *here))
    if signed := _sign_off(text, folded):
        found.append((WEAK, *signed))
    if asked and all(s < WEAK for s, _, _ in found) and (name := _name_reply(text)):
        found.append((WEAK, 0, name))
    if found or prior:
        base = max(found)[2] if found else prior
        found += _corrections(text, folded, base, asked)
    return found


def _spoken_part(raw: str) -> str:
    def sep(m: re.Match[str]) -> str:
        return "_" if m.group(2) else "-" if m.group(3) else "."

    return _SPOKEN_SEP.sub(sep, raw)


def _emails(text: str, folded: str) -> list[str]:
    found = [m.group(0) for m in _EMAIL.finditer(text)]
    if "arroba" in folded or "at" in folded or " @" in folded or "@ " in folded:
        for m in _SPOKEN_EMAIL.finditer(folded):
            prev = _previous_word(folded, m.start())
            if prev and prev[-1].isalnum() and prev not in lexicon.EMAIL_LEAD:
                found.append("")  # the address may start earlier: none rather than a part
                continue
            found.append(f"{_spoken_part(m.group(1))}@{_spoken_part(m.group(2))}")
    return found


def _mask_injected(text: str, folded: str) -> tuple[str, str]:
    """Blank out quoted/injected structured data (positions kept): it is not the visitor's.

    That is a JSON object, a "system:" line, <system> tags, and field assignments written as
    instructions ("telefono = 555...", "set email to ..."; after "ignora tus instrucciones"
    also "telefono: 555...").
    """
    spans = []
    if "{" in folded or "<" in folded or ":" in folded:
        spans += [m.span() for m in _INJECTED.finditer(folded)]
    if "=" in folded or " to " in folded or " a " in folded or ":" in folded:
        spans += [m.span() for m in _ASSIGNMENT.finditer(folded)]
        loose = ":" in folded or " to " in folded or " como " in folded
        if loose and _OVERRIDE.search(folded):
            spans += [m.span() for m in _LOOSE_ASSIGNMENT.finditer(folded)]
    if not spans:
        return text, folded
    return _blank(text, spans), _blank(folded, spans)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each (possibly overlapping) span replaced by as many spaces, in one pass."""
    parts, done = [], 0
    for a, b in sorted(spans):
        if b <= done:
            continue
        a = max(a, done)
        parts += [text[done:a], " " * (b - a)]
        done = b
    parts.append(text[done:])
    return "".join(parts)


class _Phone:
    """A number the visitor gave: its kind ("cel", "casa", ...) and whether they shunned it."""

    __slots__ = ("raw", "kind", "shunned")

    def __init__(self, raw: str, kind: str | None) -> None:
        self.raw, self.kind, self.shunned = raw, kind, False


def _phones(text: str, folded: str, found: list[_Phone]) -> str | None:
    """Add this message's numbers to ``found``; return a kind of number the visitor prefers.

    Someone else's number ("apunta el de mi vecina ...") is skipped; "ese casi nunca lo
    contesto" after a number marks it shunned.
    """
    context = bool(_PHONE_CONTEXT.search(folded))
    start = 0  # where the words about the next number begin
    before = len(found)
    for m in _PHONE.finditer(text):
        raw = m.group(0).strip()
        digits = sum(c.isdigit() for c in raw)
        if digits < 7 or _DATE.fullmatch(raw) or _NOT_PHONE_AFTER.match(folded, m.end()):
            continue
        if _THOUSANDS.fullmatch(raw) and not context:
            continue
        lead = folded[start : m.start()]
        lead = lead[max(lead.rfind("."), lead.rfind("!"), lead.rfind("?"), lead.rfind("\n")) + 1 :]
        start = m.end()
        _shun(lead, found, before)
        third = [t.end() for t in _THIRD_PARTY.finditer(lead)]
        if third and not any(o.start() >= third[-1] for o in _OWN_PHONE.finditer(lead)):
            continue
        kinds = [k.group(1) for k in _PHONE_KIND.finditer(lead[-30:])]
        found.append(_Phone(raw, kinds[-1] if kinds else None))
    _shun(folded[start:], found, before)
    prefs = (
        [m.group(1) for m in _PHONE_PREFERENCE.finditer(folded)]
        if "mejor" in folded or ("prefiero" in folded or "que mas" in folded)
        else []
    )
    return prefs[-1] if prefs else None


_ORDINAL = re.compile(r"\b(?:el|ese|este)\s+(primero|segundo|otro|ultimo)\b")


def _shun(words: str, found: list[_Phone], before: int) -> None:
    """Mark the number ``words`` say is rarely answered: the one they name, else the last."""
    if len(found) == before or not (" no" in words or "nunca" in words):
        return
    for m in _PHONE_SHUNNED.finditer(words):
        ordinals = _ORDINAL.findall(words, max(0, m.start() - 30), m.start())
        mine = found[before:]
        if ordinals and ordinals[-1] == "primero":
            mine[0].shunned = True
        elif ordinals and ordinals[-1] == "segundo" and len(mine) > 1:
            mine[1].shunned = True
        else:
            mine[-1].shunned = True


def _phone_choice(phones: list[_Phone], preference: str | None, region: str) -> str | None:
    """The visitor's number: the preferred kind if they named one, else the last not shunned.

    Visitors correct themselves, so without a preference the last number wins.  Only the last
    ``_MAX_CONTACTS`` numbers are parsed: parsing costs ~0.1 ms a number.
    """
    valid = [(p, v) for p in phones[-_MAX_CONTACTS:] if (v := normalise_phone(p.raw, region))]
    if not valid:
        return None
    if preference:
        if preference == "primero":
            return valid[0][1]
        if preference == "segundo" and len(valid) > 1:
            return valid[1][1]
        kinds = lexicon.MOBILE_KINDS if preference in lexicon.MOBILE_KINDS else None
        kinds = kinds or (lexicon.LANDLINE_KINDS if preference in lexicon.LANDLINE_KINDS else None)
        if kinds:
            same = [v for p, v in valid if p.kind in kinds]
            if same:
                return same[-1]
            # "mejor el cel" when only the other number was labelled ("el de la casa")
            other = (
                lexicon.LANDLINE_KINDS if kinds is lexicon.MOBILE_KINDS else lexicon.MOBILE_KINDS
            )
            rest = [v for p, v in valid if p.kind not in other]
            if rest and len(rest) < len(valid):
                return rest[-1]
    kept = [v for p, v in valid if not p.shunned]
    return kept[-1] if kept else valid[-1][1]


def _objections(folded: str) -> list[str]:
    """The objections stated: a cue neither negated before it nor dismissed after it.

    A negated cue in a question still counts ("¿no es una estafa?" is a worry).
    """
    found = []
    for name, rx in _OBJECTIONS.items():
        for m in rx.finditer(folded):
            if not _STARTS_NEGATED.match(m.group(0)) and _OBJECTION_NEGATED.search(
                folded, max(0, m.start() - _NEGATION_REACH * 2), m.start()
            ):
                end = _SENTENCE_END.search(folded, m.end(), m.end() + _REACH)
                if not (end and end.group(0) == "?"):
                    continue
            if _OBJECTION_DISMISSED.match(folded, m.end(), m.end() + _REACH):
                continue
            found.append(name)
            break
    return found


def _rejected(folded: str) -> bool:
    """An explicit rejection ("no me interesa"), not a conditional one ("si es X, no me...")."""
    for m in _REJECTION.finditer(folded):
        reach = max(0, m.start() - _REACH)
        clause = max(reach, *(folded.rfind(c, reach, m.start()) + 1 for c in ".!?\n;"))
        if not _CONDITION.search(folded, clause, m.start()) and not _CONDITION_AFTER.match(
            folded, m.end(), m.end() + _REACH
        ):
            return True
    return False


def _intent(folded: str) -> bool:
    return any(not _negated(folded, m.start()) for m in _INTENT.finditer(folded))


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


def _last_email(candidates: list[str]) -> str | None:
    """The last address that is valid (of the last ``_MAX_CONTACTS``): visitors correct
    themselves, and validating costs ~0.1 ms an address."""
    for candidate in reversed(candidates[-_MAX_CONTACTS:]):
        if email := normalise_email(candidate):
            return email
    return None


class RulesExtractor:
    """Keyword and pattern extraction; never raises for any list of messages.

    ``max_chars``: characters of the conversation read, newest kept (``NEXUS_MAX_EXTRACT_CHARS``);
    ``phone_region``: the region assumed for a number without a country code
    (``NEXUS_PHONE_REGION``).
    """

    name = "rules"

    def __init__(
        self,
        max_chars: int = DEFAULT_MAX_EXTRACT_CHARS,
        phone_region: str = DEFAULT_PHONE_REGION,
    ) -> None:
        self.max_chars = max_chars
        self.phone_region = phone_region

    def extract(self, messages: Messages) -> ExtractionResult:
        messages = newest(messages, self.max_chars)
        best: tuple[int, int, int, str] | None = None
        emails: list[str] = []
        phones: list[_Phone] = []
        preference: str | None = None
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
            prior = best[3] if best else None
            found = [(s, index, pos, n) for s, pos, n in _names(text, folded, asked, prior)]
            best = max([*found, best] if best else found, default=None)
            emails += _emails(text, folded)
            preference = _phones(text, folded, phones) or preference
            texts.append(text)
            folds.append(folded)
            asked = False

        visitor = "\n".join(folds)
        raw = {
            "nombre": best[3] if best else None,
            "email": _last_email(emails),
            "telefono": _phone_choice(phones, preference, self.phone_region),
            "ocupacion": _occupation("\n".join(texts), visitor),
            "objeciones": _objections(visitor),
            "arquetipo": _archetype(visitor),
        }
        rejected = _rejected(visitor)
        raw["rechazo"] = rejected
        prospect = normalise(raw, phone_region=self.phone_region)
        interest = (
            2 * bool(prospect.nombre)
            + 3 * bool(prospect.telefono)
            + 1.5 * bool(prospect.email)
            + 2 * _intent(visitor)
            - 3 * rejected
        )
        result = normalise(
            {**prospect.to_dict(), "nivel_interes": interest}, phone_region=self.phone_region
        )
        return ExtractionResult(result)
