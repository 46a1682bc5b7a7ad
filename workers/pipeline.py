"""``process_nexus_message``: one version of one conversation, from pending to completed.

Every version gets exactly one message, at once, from the dispatch trigger (sql/migrations/
0003) -- whether it came through HTTP or psql.  The worker then decides:

0. Not the row's current, open version (completed, failed or superseded): a no-op.
1. The version adds no visitor text to the one whose result the row holds (the widget resent
   the chat with the assistant's reply only): it completes with that result without
   extracting (and without a merge, unless it carries a new fingerprint).
2. Debounce (``NEXUS_DEBOUNCE_MS``, see :mod:`nexus.debounce`): a version still inside its
   quiet window is deferred when its offline rules find nothing urgent, or when an extraction
   of the row started within the window already (at most one at-once paid call per window) --
   in one transaction the row records its due time and signals, the version's message is sent
   again, delayed until then, and new identity values the rules found (name, email, phone)
   reach prospect_data at once (the provisional merge: no ledger row; the extraction
   supersedes them); this delivery then ends normally, so no failed attempt is counted.  A
   newer version arriving meanwhile supersedes it (step 0 when the delayed message comes).
   Another delivery of a deferred version before its due time is a no-op.  A retry (after a
   failed attempt) is due at once.  The delay lives in the broker table, not in worker
   memory, so it survives restarts; the sweeper re-dispatches a deferred row whose message
   was lost.
3. Claim the version and commit ``processing`` (operators see what is in flight).
4. Extract outside any transaction.
5. In one transaction, fenced by version: mark ``completed`` and merge the prospect through
   the merge ledger (``nexus_merge_version``: ``UNIQUE (queue_id, version)``, so a version
   merges at most once even if the status fence were bypassed).  A version superseded while
   it was extracted is not completed, but its result is kept on the row and merged when it is
   the newest extraction so far (a phone number shows at once, not after the next version).

Failures retry with exponential backoff and jitter (the broker reschedules the same message in
the database).  Every failed attempt bumps ``retry_count`` and records ``error_message``; the
last one, or an error that retrying cannot fix, marks the row ``failed``.
"""

import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded

from nexus import db, debounce, metrics
from nexus.errors import ExtractionError, PermanentExtractionError

from . import resources
from .resources import settings

log = logging.getLogger(__name__)

#: Queue of the processing actor (also named by the dispatch trigger in sql/migrations/0003).
QUEUE = "nexus"


def _attempts_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return 0 if message is None else int(message.options.get("retries", 0))


def _record_calls(engine, queue_id: str, version: int, calls) -> None:
    try:
        db.record_llm_calls(engine, queue_id, version, calls)
    except Exception:
        # The extraction itself is done: losing its usage must not cost another paid call.
        log.exception("could not record the LLM usage of %s v%s", queue_id, version)


def _extract(engine, extractor, queue_id: str, version: int, messages):
    """Extract, and record the usage of every LLM call it made, failed calls included (in the
    database and in the metrics), and the time it took."""
    started = time.perf_counter()
    try:
        extracted = extractor.extract(messages)
    except ExtractionError as exc:
        metrics.count_calls(exc.calls)
        _record_calls(engine, queue_id, version, exc.calls)
        raise
    metrics.extraction_done(
        extracted.extractor or extractor.name, time.perf_counter() - started, extracted.calls
    )
    _record_calls(engine, queue_id, version, extracted.calls)
    return extracted


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=settings().max_retries,
    min_backoff=settings().min_backoff_ms,
    max_backoff=settings().max_backoff_ms,
    throws=(PermanentExtractionError,),
)
def process_nexus_message(queue_id: str, version: int) -> None:
    engine = resources.engine()
    state = db.version_state(engine, queue_id, version)
    if state is None:
        log.info("queue row %s v%s is completed or superseded: nothing to do", queue_id, version)
        return
    if state.unchanged:
        outcome = db.complete_unchanged(engine, queue_id, version)
        if outcome is not None:
            log.info(
                "queue row %s v%s adds no visitor text: completed %s", queue_id, version, outcome
            )
            return
    signals = None
    if settings().debounce_ms > 0 and state.status == "pending" and not state.deferred:
        signals = debounce.signals(
            resources.rules_extractor().extract(state.messages).prospect.to_dict()
        )
        previous = state.signals
        if previous is None and state.result is not None:
            previous = debounce.signals(state.result)
        if _inside_quiet_window(state) and (
            not debounce.urgent(signals, previous) or _extracted_lately(state)
        ):
            delay = db.defer_version(
                engine,
                queue_id,
                version,
                settings().debounce_ms,
                signals,
                provisional=debounce.new_identity(signals, previous),
            )
            log.info("queue row %s v%s waits %s ms for quiet", queue_id, version, delay)
            return
    elif state.deferred and state.status == "pending" and (state.due_in_ms or 0) > 0:
        log.info("queue row %s v%s is deferred: its delayed message will run it", queue_id, version)
        return
    claimed = db.claim_version(engine, queue_id, version, signals)
    if claimed is None:
        log.info("queue row %s v%s is completed or superseded: nothing to do", queue_id, version)
        return
    try:
        extractor = resources.extractor()
        extracted = _extract(engine, extractor, queue_id, version, claimed.messages)
        outcome = db.complete_version(
            engine,
            queue_id,
            version,
            extracted.prospect.to_dict(),
            extracted.usage,
            extracted.extractor or extractor.name,
            extracted.reason,
            claimed,
        )
    except (Exception, TimeLimitExceeded) as exc:
        metrics.extraction_failed(exc)
        final = isinstance(exc, PermanentExtractionError) or (
            _attempts_so_far() >= settings().max_retries
        )
        reason = f"{type(exc).__name__}: {exc}"
        try:
            recorded = db.record_failure(engine, queue_id, version, reason, final)
        except Exception:
            log.exception("could not record the failure of %s v%s", queue_id, version)
            raise exc from None
        if recorded is None:
            # Superseded or finished by another delivery meanwhile: nothing left to retry.
            log.info("queue row %s v%s moved on while this attempt failed", queue_id, version)
            return
        retry_after = getattr(exc, "retry_after", None)
        if retry_after and not final:
            # The API said how long to wait (429/529): at least that, never less than usual.
            delay = max(int(retry_after * 1000), settings().min_backoff_ms)
            raise dramatiq.Retry(reason, delay=delay) from exc
        raise
    if outcome is None:
        log.info("queue row %s v%s was superseded while processing", queue_id, version)
    else:
        log.info("queue row %s v%s completed %s", queue_id, version, outcome)


def _inside_quiet_window(state: db.VersionState) -> bool:
    """A first attempt (a retry is due at once) younger than the debounce window."""
    return state.retry_count == 0 and state.age_ms < settings().debounce_ms


def _extracted_lately(state: db.VersionState) -> bool:
    """An extraction of the row (any version) started within the debounce window, or since the
    chat last went quiet (this version arrived while an earlier one still waited for quiet):
    at most one urgent version per quiet window is extracted at once."""
    since = state.since_extraction_ms
    if since is None:
        return False
    return since < settings().debounce_ms or state.before_previous_due
