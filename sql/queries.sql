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

-- name: version_state
-- What the worker needs to decide about one version, if it is the row's current version and
-- still open: whether it adds visitor text to the extracted one, and where it stands in its
-- quiet window (milliseconds, on the database clock).
SELECT q.status, q.messages, q.fingerprint, q.result, q.signals, q.retry_count,
       q.result IS NOT NULL
           AND q.visitor_hash = public.nexus_visitor_hash(q.messages) AS unchanged,
       q.deferred_version IS NOT DISTINCT FROM q.version AS deferred,
       extract(epoch FROM q.due_at - clock_timestamp()) * 1000 AS due_in_ms,
       extract(epoch FROM clock_timestamp() - q.enqueued_at) * 1000 AS age_ms,
       extract(epoch FROM clock_timestamp() - q.extraction_started_at) * 1000
           AS since_extraction_ms,
       -- The version arrived while an earlier deferred version was still waiting for quiet
       -- (due_at is that version's until this one is deferred): the chat has not gone quiet.
       coalesce(q.enqueued_at < q.due_at, false) AS before_previous_due
  FROM public.nexus_queue q
 WHERE q.id = CAST(:queue_id AS uuid) AND q.version = :version
   AND q.status IN ('pending', 'processing');

-- name: defer_version
-- Hold this version until the conversation has been quiet for :debounce_ms: record the due
-- time and the version's signals, and send the version's message again, delayed until then
-- -- once per version (a second delivery finds it deferred already).  Returns the delay and
-- the row's fingerprint, or no row.
WITH deferred AS (
    UPDATE public.nexus_queue
       SET deferred_version = version,
           due_at = enqueued_at + :debounce_ms * interval '1 millisecond',
           signals = CAST(:signals AS jsonb), signals_version = version,
           signals_at = clock_timestamp()
     WHERE id = CAST(:queue_id AS uuid) AND version = :version AND status = 'pending'
       AND deferred_version IS DISTINCT FROM version
    RETURNING id, version, fingerprint,
              greatest(0, ceil(extract(epoch FROM due_at - clock_timestamp()) * 1000))::bigint
                  AS delay_ms)
SELECT delay_ms, fingerprint,
       public.broker_enqueue('nexus', 'process_nexus_message',
                             jsonb_build_array(id::text, version), '{}'::jsonb, '{}'::jsonb,
                             delay_ms) AS message_id
  FROM deferred;

-- name: claim_version
-- Start an attempt on one version of a row.  'processing' is accepted too: a message
-- redelivered after its worker died must still be processed.  Anything else (completed,
-- failed, or a newer version) makes the delivery a no-op.  :signals (the offline rules'
-- findings, when the debounce computed them) are kept for the next version to compare with.
-- extraction_started_at opens the quiet window in which no other urgent version is extracted
-- at once.
UPDATE public.nexus_queue
   SET status = 'processing', started_at = now(), updated_at = now(),
       extraction_started_at = clock_timestamp(),
       signals = coalesce(CAST(:signals AS jsonb), signals),
       signals_version = CASE WHEN CAST(:signals AS jsonb) IS NULL THEN signals_version
                              ELSE version END,
       signals_at = CASE WHEN CAST(:signals AS jsonb) IS NULL THEN signals_at
                         ELSE clock_timestamp() END
 WHERE id = CAST(:queue_id AS uuid) AND version = :version
   AND status IN ('pending', 'processing')
RETURNING messages, fingerprint;

-- name: complete_version
-- Fenced by version and status: a late attempt on an old version never touches a newer one,
-- and a second delivery of the same version finds it completed already.
UPDATE public.nexus_queue
   SET status = 'completed', processed_at = now(), updated_at = now(), error_message = NULL,
       result = CAST(:result AS jsonb), usage = CAST(:usage AS jsonb), extractor = :extractor,
       extractor_reason = :extractor_reason,
       result_version = version, visitor_hash = public.nexus_visitor_hash(messages)
 WHERE id = CAST(:queue_id AS uuid) AND version = :version AND status = 'processing'
RETURNING fingerprint;

-- name: keep_superseded_result
-- The extraction of a version superseded while it ran: not a completion (the newer version
-- is still processed), but the newest extraction so far, so the row keeps it -- the newer
-- version may add only assistant text and then completes with it -- and it is merged.
UPDATE public.nexus_queue
   SET result = CAST(:result AS jsonb), usage = CAST(:usage AS jsonb), extractor = :extractor,
       extractor_reason = :extractor_reason, result_version = :version,
       visitor_hash = public.nexus_visitor_hash(CAST(:messages AS jsonb))
 WHERE id = CAST(:queue_id AS uuid) AND version > :version
   AND (result_version IS NULL OR result_version < :version)
RETURNING 1;

-- name: complete_unchanged
-- A version that adds no visitor text to the extracted one completes with that result.
UPDATE public.nexus_queue
   SET status = 'completed', processed_at = now(), updated_at = now(), error_message = NULL
 WHERE id = CAST(:queue_id AS uuid) AND version = :version
   AND status IN ('pending', 'processing')
   AND result IS NOT NULL AND visitor_hash = public.nexus_visitor_hash(messages)
RETURNING fingerprint, result;

-- name: session_merged_fingerprint
-- The fingerprint the session's latest merged version went to (none: never merged).
SELECT fingerprint_id
  FROM public.prospect_merges
 WHERE queue_id = CAST(:queue_id AS uuid)
 ORDER BY version DESC
 LIMIT 1;

-- name: recompute_prospect
-- The provisional merge: the prospect recomputed from the ledger and the open rows' signals
-- (sql/migrations/0011), without a ledger row.
SELECT public.nexus_recompute_prospect(:fingerprint) AS outcome;

-- name: merge_version
-- Record the version in the merge ledger and recompute the prospect (sql/migrations/0007).
SELECT public.nexus_merge_version(CAST(:queue_id AS uuid), :version, :fingerprint,
                                  CAST(:data AS jsonb)) AS outcome;

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
-- (ready, delayed or claimed).  When the broker dead-lettered that version's message (its
-- delivery cap, after the message's workers died under it; a poison message), the row is
-- marked failed with the dead letter's reason, so it ends visibly (`nexus failed`, `nexus
-- retry`) instead of being sent to another worker to kill; any other stuck row gets a new
-- message.  Returns the number re-dispatched.
WITH stuck AS (
    SELECT q.id, q.version,
           (SELECT d.error
              FROM public.broker_dead_letters d
             WHERE d.actor_name = 'process_nexus_message'
               AND d.args ->> 0 = q.id::text
               AND d.args -> 1 = to_jsonb(q.version)
             ORDER BY d.failed_at DESC
             LIMIT 1) AS dead_error,
           EXISTS (
               SELECT FROM public.broker_dead_letters d
                WHERE d.actor_name = 'process_nexus_message'
                  AND d.args ->> 0 = q.id::text
                  AND d.args -> 1 = to_jsonb(q.version)) AS dead
      FROM public.nexus_queue q
     WHERE q.status IN ('pending', 'processing')
       AND q.updated_at < now() - make_interval(secs => :min_age_s)
       AND NOT EXISTS (
           SELECT FROM public.broker_messages m
            WHERE m.actor_name = 'process_nexus_message'
              AND m.args ->> 0 = q.id::text
              AND m.args -> 1 = to_jsonb(q.version))
), given_up AS (
    UPDATE public.nexus_queue q
       SET status = 'failed', retry_count = q.retry_count + 1,
           error_message = 'dead-lettered by the broker: '
                           || coalesce(s.dead_error, 'no reason recorded'),
           processed_at = now(), updated_at = now()
      FROM stuck s
     WHERE s.dead AND q.id = s.id AND q.version = s.version
       AND q.status IN ('pending', 'processing')
)
SELECT count(public.broker_enqueue('nexus', 'process_nexus_message',
                                   jsonb_build_array(s.id::text, s.version))) AS swept
  FROM stuck s
 WHERE NOT s.dead;

-- -- operations (nexus/ops.py; the functions are in migrations/0008_operations.sql) ----------

-- name: ops_status_counts
SELECT status, last_24h, total, avg_processing_s_24h FROM public.nexus_status_counts();

-- name: ops_oldest_ages
SELECT oldest_pending_s, oldest_processing_s FROM public.nexus_oldest_ages();

-- name: ops_extractors_24h
SELECT extractor, model, rows FROM public.nexus_extractors_24h();

-- name: ops_queue_stats
SELECT queue_name, ready, delayed, claimed, dead_letters, oldest_ready_s
  FROM public.broker_queue_stats();

-- name: ops_live_workers
SELECT worker_id, hostname, pid, started_at, heartbeat_at, lease_until, claims
  FROM public.broker_live_workers();

-- name: ops_clock_last_runs
SELECT job, slot, fired_at FROM public.nexus_clock_last_runs();

-- name: ops_failed_rows
SELECT id, session_id, fingerprint, version, error_message, retry_count, failed_at
  FROM public.nexus_failed_rows(CAST(:since AS interval), :limit);

-- name: ops_retry_rows
SELECT public.nexus_retry_rows(CAST(:ids AS uuid[]), :strict) AS retried;

-- name: ops_retry_failed
SELECT public.nexus_retry_failed(CAST(:since AS interval)) AS retried;

-- name: ops_dead_letters
SELECT message_id, queue_name, actor_name, args, retries, attempts, error, enqueued_at, failed_at
  FROM public.broker_dead_letter_list(:limit);

-- name: ops_dead_letter
SELECT message_id, queue_name, actor_name, args, kwargs, options, retries, attempts, error,
       traceback, enqueued_at, failed_at
  FROM public.broker_dead_letter_get(CAST(:message_id AS uuid));

-- name: ops_requeue_dead_letters
SELECT public.broker_requeue_dead_letters(CAST(:ids AS uuid[]), :strict) AS requeued;

-- name: ops_requeue_all_dead_letters
SELECT public.broker_requeue_all_dead_letters() AS requeued;

-- name: ops_purge_dead_letters
SELECT public.broker_purge_dead_letters(CAST(:older_than AS interval)) AS purged;

-- name: ops_forget_visitor
SELECT prospects, queue_rows, merges, broker_messages, dead_letters
  FROM public.nexus_forget_visitor(:fingerprint);

-- name: ops_prospects
SELECT fingerprint_id, nombre, email, telefono, ocupacion, nivel_interes, objeciones,
       arquetipo, momento_optimo, etapa, created_at, updated_at
  FROM public.nexus_prospects(:momento, CAST(:since AS interval), :limit);

-- name: ops_expire_prospects
SELECT public.nexus_expire_prospects(CAST(:max_age AS interval), :limit) AS deleted;

-- name: record_llm_call
INSERT INTO public.llm_calls (queue_id, version, model, outcome, input_tokens, output_tokens,
                              cache_creation_input_tokens, cache_read_input_tokens)
VALUES (CAST(:queue_id AS uuid), :version, :model, :outcome, :input_tokens, :output_tokens,
        :cache_creation_input_tokens, :cache_read_input_tokens);

-- name: tokens_today
-- Input (uncached, cache writes and cache reads) plus output tokens since 00:00 UTC: what
-- NEXUS_DAILY_TOKEN_BUDGET is compared with.  A range scan of llm_calls_at_idx.
SELECT coalesce(sum(input_tokens + cache_creation_input_tokens + cache_read_input_tokens
                    + output_tokens), 0)::bigint AS tokens
  FROM public.llm_calls
 WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

-- name: llm_usage_by_model
-- `nexus cost`: calls and tokens by kind per model since a time.
SELECT model,
       count(*) AS calls,
       count(*) FILTER (WHERE outcome <> 'ok') AS failed_calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(cache_creation_input_tokens), 0)::bigint AS cache_creation_input_tokens,
       coalesce(sum(cache_read_input_tokens), 0)::bigint AS cache_read_input_tokens
  FROM public.llm_calls
 WHERE at >= :since
 GROUP BY model
 ORDER BY model;

-- -- admin surface ------------------------------------------------------------------------------
-- The admin surface (/metrics, /admin): functions of migration 0010, callable by nexus_web.
-- The rest it shows comes from 0008's ops_* queries (nexus/ops.py).

-- name: admin_status_counts
SELECT status, count FROM public.nexus_admin_status_counts();

-- name: fold_queue_tally
SELECT public.nexus_tally_fold();

-- name: admin_minutes
SELECT minute, accepted, completed, failed FROM public.nexus_admin_minutes(:minutes);

-- name: admin_processing_times
SELECT completed, p50_s, p95_s FROM public.nexus_admin_processing_times(:window_s);
