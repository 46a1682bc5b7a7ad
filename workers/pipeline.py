"""``process_nexus_message``: one version of one conversation, from pending to completed.

1. Claim the version and commit ``processing`` (operators see what is in flight).
2. Extract outside any transaction.
3. In one transaction, fenced by version: mark ``completed`` and merge the prospect with
   ``update_prospect_data`` -- so the merge happens exactly once per version, even when a
   message is delivered twice.

Failures retry with exponential backoff and jitter (the broker reschedules the same message in
the database).  Every failed attempt bumps ``retry_count`` and records ``error_message``; the
last one, or an error that retrying cannot fix, marks the row ``failed``.
"""

import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded

from nexus import db, metrics
from nexus.errors import PermanentExtractionError

from . import resources
from .resources import settings

log = logging.getLogger(__name__)

#: Queue of the processing actor (also named by the dispatch trigger in sql/migrations/0003).
QUEUE = "nexus"


def _attempts_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return 0 if message is None else int(message.options.get("retries", 0))


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=settings().max_retries,
    min_backoff=settings().min_backoff_ms,
    max_backoff=settings().max_backoff_ms,
    throws=(PermanentExtractionError,),
)
def process_nexus_message(queue_id: str, version: int) -> None:
    engine = resources.engine()
    claimed = db.claim_version(engine, queue_id, version)
    if claimed is None:
        log.info("queue row %s v%s is completed or superseded: nothing to do", queue_id, version)
        return
    try:
        extractor = resources.extractor()
        started = time.perf_counter()
        extracted = extractor.extract(claimed.messages)
        metrics.extraction_done(extractor.name, time.perf_counter() - started, extracted.usage)
        outcome = db.complete_version(
            engine,
            queue_id,
            version,
            extracted.prospect.to_dict(),
            extracted.usage,
            extractor.name,
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
