"""When a new version of a conversation is due: after a quiet window, unless it is urgent.

The widget resends the whole chat after every visitor message and every assistant reply, so
extracting each version at once pays for every turn.  A new version therefore waits
``NEXUS_DEBOUNCE_MS`` (default 30 s with Claude, 0 with the free rules extractor) after it
arrived; a newer version arriving meanwhile supersedes it, so a chat costs one extraction
once it goes quiet.

Except: a version in which the offline rules find something new that sales acts on -- a name,
an email, a phone, an explicit intent or an explicit rejection that the previous version's
rules result did not have -- is due at once, if no extraction of the row started within the
window, nor since the chat last went quiet (a version arriving while an earlier one still
waits for quiet is inside the same window): at most one at-once paid call per quiet window.
Visitors type every 5-30 s, so a short window alone saves little, and a name, an intent and
a phone in three turns a minute apart would otherwise cost three calls (on a replay of
realistic chats a window counted from the last call alone still gave 2.6 calls per
conversation).  A later urgent version is deferred like a quiet one, but a phone must not
wait for the quiet: the identity values its rules found (:func:`new_identity`: a name, an
email, a phone) are merged into the prospect provisionally, at once and free, in the defer
transaction (``nexus_recompute_prospect``, sql/migrations/0011), until the extraction of that
version or a newer one supersedes them.

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


def new_identity(new: Mapping, previous: Mapping | None) -> bool:
    """True when ``new`` (signals of this version) has a contact field -- a name, an email, a
    phone -- that ``previous`` (None: nothing known) did not have, or had another value of."""
    previous = previous or {}
    return any(new.get(name) and new.get(name) != previous.get(name) for name in CONTACT_FIELDS)


def urgent(new: Mapping, previous: Mapping | None) -> bool:
    """True when ``new`` (signals of this version) has something ``previous`` (signals of the
    previous version, or of the stored result; None: nothing known) did not."""
    if new_identity(new, previous):
        return True
    previous = previous or {}
    return any(new.get(flag) and not previous.get(flag) for flag in ("intent", "rechazo"))
