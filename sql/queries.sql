-- Named queries: parsed into a dict by nexus.db.parse_queries() and run by name.

-- name: enqueue
-- The idempotent upsert (see nexus_enqueue in 0001); the dispatch trigger adds the message.
SELECT queue_id, queue_version, duplicate
  FROM public.nexus_enqueue(CAST(:messages AS jsonb), :session_id, :fingerprint,
                            CAST(:metadata AS jsonb));

-- name: ping
-- The web's health check (nexus_health in 0006: runs as nexus_web, which reads no table).
SELECT public.nexus_health();

-- name: assume_role
-- Run on every new connection of a process that works as one role (the web: nexus_web);
-- a no-op, answering false, when the login user is not a member.
SELECT CASE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :role) THEN NULL
            WHEN pg_has_role(session_user, :role, 'MEMBER')
            THEN set_config('role', :role, false) END IS NOT NULL AS assumed;

-- name: stats
-- Queue and broker statistics in one round trip (nexus_stats in 0006).
SELECT public.nexus_stats() AS stats;

-- name: stats_by_status
-- The seed's monitoring query, timed from when the current version was enqueued.  The web
-- calls nexus_stats() instead (0006: the same figures, callable by nexus_web).
SELECT status,
       count(*) AS count,
       avg(extract(epoch FROM (processed_at - enqueued_at))) AS avg_processing_time_sec
  FROM public.nexus_queue
 WHERE enqueued_at > now() - interval '24 hours'
 GROUP BY status
 ORDER BY status;

-- name: oldest_pending_age
SELECT extract(epoch FROM (now() - min(enqueued_at))) AS seconds
  FROM public.nexus_queue
 WHERE status = 'pending';

-- name: claim_version
-- Start an attempt on one version of a row.  'processing' is accepted too: a message
-- redelivered after its worker died must still be processed.  Anything else (completed,
-- failed, or a newer version) makes the delivery a no-op.
UPDATE public.nexus_queue
   SET status = 'processing', started_at = now(), updated_at = now()
 WHERE id = CAST(:queue_id AS uuid) AND version = :version
   AND status IN ('pending', 'processing')
RETURNING messages, fingerprint;

-- name: complete_version
-- Fenced by version and status: a late attempt on an old version never touches a newer one,
-- and a second delivery of the same version finds it completed already.
UPDATE public.nexus_queue
   SET status = 'completed', processed_at = now(), updated_at = now(), error_message = NULL,
       result = CAST(:result AS jsonb), usage = CAST(:usage AS jsonb), extractor = :extractor
 WHERE id = CAST(:queue_id AS uuid) AND version = :version AND status = 'processing'
RETURNING fingerprint;

-- name: merge_prospect
SELECT public.update_prospect_data(:fingerprint, CAST(:data AS jsonb)) AS outcome;

-- name: record_failure
-- One failed attempt: bump retry_count, keep the reason; the last one marks the row failed.
UPDATE public.nexus_queue
   SET retry_count = retry_count + 1,
       error_message = :error,
       status = CASE WHEN :final THEN 'failed' ELSE 'pending' END,
       processed_at = CASE WHEN :final THEN now() END,
       updated_at = now()
 WHERE id = CAST(:queue_id AS uuid) AND version = :version AND status = 'processing'
RETURNING retry_count, status;

-- name: cleanup_batch
SELECT public.cleanup_old_nexus_queue(:limit) AS deleted;

-- name: claim_clock_slot
INSERT INTO public.nexus_clock_slots (job, slot) VALUES (:job, :slot)
ON CONFLICT DO NOTHING
RETURNING job;

-- name: forget_old_clock_slots
DELETE FROM public.nexus_clock_slots WHERE fired_at < now() - interval '7 days';

-- name: sweep_stuck_rows
-- Rows in pending/processing, quiet for a while, with no live message for their version
-- (ready, delayed or claimed): give each one a new message.  Dead letters do not count.
SELECT count(public.broker_enqueue('nexus', 'process_nexus_message',
                                   jsonb_build_array(q.id::text, q.version))) AS swept
  FROM public.nexus_queue q
 WHERE q.status IN ('pending', 'processing')
   AND q.updated_at < now() - make_interval(secs => :min_age_s)
   AND NOT EXISTS (
       SELECT FROM public.broker_messages m
        WHERE m.actor_name = 'process_nexus_message'
          AND m.args ->> 0 = q.id::text
          AND m.args -> 1 = to_jsonb(q.version));
