"""Periodic actors, sent by the clock process (``nexus clock``) once per time slot."""

import datetime as dt
import logging

import dramatiq

from nexus import db, ops

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
    and -- when NEXUS_PROSPECT_RETENTION_DAYS is set -- prospects not updated for that many
    days with their merge-ledger rows; in batches."""
    engine = resources.engine()
    deleted = db.cleanup_old_rows(engine, CLEANUP_BATCH)
    dead = cleanup_old_nexus_queue.broker.forget_dead_letters(DEAD_LETTER_RETENTION_S)
    days = resources.settings().prospect_retention_days
    expired = 0
    if days:
        expired = ops.expire_prospects(engine, dt.timedelta(days=days), CLEANUP_BATCH)
    log.info("cleanup deleted %d rows, %d dead letters and %d prospects", deleted, dead, expired)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def sweep_stuck_rows() -> None:
    """Re-dispatch rows stuck in pending/processing that have no live broker message; fold
    the status tally's deltas (so they stay few even when nobody scrapes /metrics)."""
    swept = db.sweep_stuck_rows(resources.engine(), STUCK_AFTER_S)
    db.fold_queue_tally(resources.engine())
    if swept:
        log.warning("re-dispatched %d stuck rows", swept)
