"""When a new version of a conversation is due: after a quiet window, unless it is urgent.

The widget resends the whole chat after every visitor message and every assistant reply, so
extracting each version at once pays for every turn.  A new version therefore waits
``NEXUS_DEBOUNCE_MS`` (default 30 s with Claude, 0 with the free rules extractor) after it
arrived; a newer version arriving meanwhile supersedes it, so a chat costs one extraction
once it goes quiet.

Except: a version in which the offline rules find something new that sales acts on -- a name,
an email, a phone, an explicit intent or an explicit rejection that the previous version's
rules result did not have -- is due at once.  Visitors type every 5-30 s, so a short window
alone saves little, and a long one must not delay a phone number.

The rules extractor is cheap (well under a millisecond per conversation), so the worker runs
it on every version it has to decide about; :func:`signals` keeps what the decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping

from nexus.extraction.prospect import normalise

#: The identity fields whose appearance (or change) makes a version urgent.
CONTACT_FIELDS = ("nombre", "email", "telefono")
#: SPEC 6's rubric: points for a name, a phone, an email, intent words, and a rejection.
_NAME_POINTS, _PHONE_POINTS, _EMAIL_POINTS, _INTENT_POINTS, _REJECTION_POINTS = 2, 3, 1.5, 2, 3


def signals(result: Mapping) -> dict:
    """What sales acts on in an extraction result (a ``Prospect.to_dict()``): the contact
    fields, ``rechazo``, and ``intent`` -- whether the rubric's intent points are in its
    interest (the rules extractor's interest is the rubric's sum, which has room for them)."""
    prospect = normalise(result)
    explained = (
        _NAME_POINTS * bool(prospect.nombre)
        + _PHONE_POINTS * bool(prospect.telefono)
        + _EMAIL_POINTS * bool(prospect.email)
        - _REJECTION_POINTS * prospect.rechazo
    )
    return {
        "nombre": prospect.nombre,
        "email": prospect.email,
        "telefono": prospect.telefono,
        "intent": prospect.nivel_interes - explained >= _INTENT_POINTS,
        "rechazo": prospect.rechazo,
    }


def urgent(new: Mapping, previous: Mapping | None) -> bool:
    """True when ``new`` (signals of this version) has something ``previous`` (signals of the
    previous version, or of the stored result; None: nothing known) did not."""
    previous = previous or {}
    for name in CONTACT_FIELDS:
        if new.get(name) and new.get(name) != previous.get(name):
            return True
    return any(new.get(flag) and not previous.get(flag) for flag in ("intent", "rechazo"))
