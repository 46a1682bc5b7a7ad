"""Periodic actors, sent by the clock process (``nexus clock``) once per time slot."""

import logging

import dramatiq

from nexus import db

from . import resources

log = logging.getLogger(__name__)

QUEUE = "nexus-periodic"
#: Rows deleted per transaction by the cleanup.
CLEANUP_BATCH = 1000
#: Dead letters are kept as long as failed rows (30 days), then deleted by the cleanup.
DEAD_LETTER_RETENTION_S = 30 * 86_400
#: Seconds a pending/processing row must be quiet before the sweeper looks at it.
STUCK_AFTER_S = 30


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000, max_backoff=60_000)
def cleanup_old_nexus_queue() -> None:
    """Delete completed rows older than 7 days, failed rows and dead letters older than 30,
    in batches."""
    deleted = db.cleanup_old_rows(resources.engine(), CLEANUP_BATCH)
    dead = cleanup_old_nexus_queue.broker.forget_dead_letters(DEAD_LETTER_RETENTION_S)
    log.info("cleanup deleted %d rows and %d dead letters", deleted, dead)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def sweep_stuck_rows() -> None:
    """Re-dispatch rows stuck in pending/processing that have no live broker message."""
    swept = db.sweep_stuck_rows(resources.engine(), STUCK_AFTER_S)
    if swept:
        log.warning("re-dispatched %d stuck rows", swept)
