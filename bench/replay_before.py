"""The pipeline without the assistant-only skip, for the "before" run of ``bench/replay.py``.

``dramatiq bench.replay_before`` loads the real actors (``workers``), then makes every version
look as if it added visitor text, so each changed resend is extracted again -- what the
pipeline did before.  The bench runs it with ``NEXUS_DEBOUNCE_MS=0``.  Never used outside
the benchmark.
"""

import dataclasses

import workers  # noqa: F401  (configures the broker and registers the actors)
from nexus import db

_version_state = db.version_state


def _every_version_changed(*args, **kwargs):
    state = _version_state(*args, **kwargs)
    return None if state is None else dataclasses.replace(state, unchanged=False)


db.version_state = _every_version_changed
