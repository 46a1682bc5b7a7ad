-- nexus 0008: operations -- what `nexus status|failed|retry|dead-letters|forget|prospects|cost`
-- and the web admin call.  One implementation for both: nexus/ops.py calls these functions by
-- name (sql/queries.sql).  Every function is SECURITY DEFINER with a pinned search_path, so the
-- web process (role nexus_web: functions only, no table privilege) can call them; EXECUTE is
-- revoked from PUBLIC and granted to nexus_worker and nexus_web (forget_visitor and the purge:
-- nexus_worker only -- destructive operations stay with the operator).
-- Runs on PostgreSQL 15 and 16.

-- Index for "failed rows, newest first" and retention of prospects.
CREATE INDEX nexus_queue_failed_idx ON public.nexus_queue (processed_at DESC) WHERE status = 'failed';
CREATE INDEX prospect_data_updated_at_idx ON public.prospect_data (updated_at);

-- -- reading ---------------------------------------------------------------------------------

-- Rows by status: last 24 hours (by when the current version arrived) and all time, with the
-- average processing seconds of the last 24 hours.
CREATE FUNCTION public.nexus_status_counts()
RETURNS TABLE (status text, last_24h bigint, total bigint, avg_processing_s_24h double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.status,
           coalesce(c.last_24h, 0), coalesce(c.total, 0), c.avg_s
      FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed']) AS s(status)
      LEFT JOIN (
          SELECT q.status,
                 count(*) FILTER (WHERE q.enqueued_at > now() - interval '24 hours') AS last_24h,
                 count(*) AS total,
                 avg(extract(epoch FROM (q.processed_at - q.enqueued_at)))
                     FILTER (WHERE q.enqueued_at > now() - interval '24 hours')::double precision
                     AS avg_s
            FROM public.nexus_queue q
           GROUP BY q.status) c ON c.status = s.status
     ORDER BY array_position(ARRAY['pending', 'processing', 'completed', 'failed'], s.status);
$$;

-- Age in seconds of the oldest pending row (since its version arrived) and of the oldest
-- processing attempt (since it was claimed); NULL when there is none.
CREATE FUNCTION public.nexus_oldest_ages(
    OUT oldest_pending_s double precision, OUT oldest_processing_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT (SELECT extract(epoch FROM now() - min(enqueued_at))::double precision
              FROM public.nexus_queue WHERE status = 'pending'),
           (SELECT extract(epoch FROM now() - min(coalesce(started_at, updated_at)))::double precision
              FROM public.nexus_queue WHERE status = 'processing');
$$;

-- Completed rows of the last 24 hours by extractor (rules | claude) and model: what is in use.
CREATE FUNCTION public.nexus_extractors_24h()
RETURNS TABLE (extractor text, model text, rows bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT q.extractor, q.usage ->> 'model', count(*)
      FROM public.nexus_queue q
     WHERE q.status = 'completed' AND q.processed_at > now() - interval '24 hours'
     GROUP BY 1, 2
     ORDER BY 3 DESC, 1, 2;
$$;

-- The broker's backlog per queue: ready (due now), delayed (due later), claimed (prefetched or
-- running) and dead letters.
CREATE FUNCTION public.broker_queue_stats()
RETURNS TABLE (queue_name text, ready bigint, delayed bigint, claimed bigint,
               dead_letters bigint, oldest_ready_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH live AS (
        SELECT m.queue_name,
               count(*) FILTER (WHERE m.state = 'ready' AND m.due_at <= clock_timestamp()) AS ready,
               count(*) FILTER (WHERE m.state = 'ready' AND m.due_at > clock_timestamp()) AS delayed,
               count(*) FILTER (WHERE m.state = 'claimed') AS claimed,
               min(m.enqueued_at) FILTER (WHERE m.state = 'ready' AND m.due_at <= clock_timestamp())
                   AS oldest_ready_at
          FROM public.broker_messages m
         GROUP BY m.queue_name
    ), dead AS (
        SELECT d.queue_name, count(*) AS dead_letters
          FROM public.broker_dead_letters d
         GROUP BY d.queue_name
    )
    SELECT coalesce(live.queue_name, dead.queue_name),
           coalesce(live.ready, 0), coalesce(live.delayed, 0), coalesce(live.claimed, 0),
           coalesce(dead.dead_letters, 0),
           extract(epoch FROM clock_timestamp() - live.oldest_ready_at)::double precision
      FROM live FULL JOIN dead ON dead.queue_name = live.queue_name
     ORDER BY 1;
$$;

-- Live workers (lease not expired) and the claims each holds.
CREATE FUNCTION public.broker_live_workers()
RETURNS TABLE (worker_id uuid, hostname text, pid integer, started_at timestamptz,
               heartbeat_at timestamptz, lease_until timestamptz, claims bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT w.id, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.lease_until,
           (SELECT count(*) FROM public.broker_messages m
             WHERE m.worker_id = w.id AND m.state = 'claimed')
      FROM public.broker_workers w
     WHERE w.lease_until >= clock_timestamp()
     ORDER BY w.hostname, w.pid, w.id;
$$;

-- The last slot each periodic actor was fired for, and when.
CREATE FUNCTION public.nexus_clock_last_runs()
RETURNS TABLE (job text, slot timestamptz, fired_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT DISTINCT ON (c.job) c.job, c.slot, c.fired_at
      FROM public.nexus_clock_slots c
     ORDER BY c.job, c.slot DESC;
$$;

-- Failed rows, newest failure first.  p_since NULL = all; failed_at is when the last attempt
-- failed.  The conversation itself is not returned.  The index is in exactly this order; the
-- body is plpgsql so each call is planned with its limit known (a SQL function was planned once
-- with the limit unknown, and that plan read and sorted every failed row: ~90 ms for 20,000
-- failed rows of 1,000,000); this reads the first page's index entries only.
CREATE INDEX nexus_queue_failed_page_idx ON public.nexus_queue (processed_at DESC NULLS LAST, id)
    WHERE status = 'failed';

CREATE FUNCTION public.nexus_failed_rows(
    p_since interval DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS TABLE (id uuid, session_id text, fingerprint text, version integer,
               error_message text, retry_count integer, failed_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_since IS NULL THEN
        RETURN QUERY
        SELECT q.id, q.session_id, q.fingerprint, q.version, q.error_message, q.retry_count,
               q.processed_at
          FROM public.nexus_queue q
         WHERE q.status = 'failed'
         ORDER BY q.processed_at DESC NULLS LAST, q.id
         LIMIT p_limit;
    ELSE
        RETURN QUERY
        SELECT q.id, q.session_id, q.fingerprint, q.version, q.error_message, q.retry_count,
               q.processed_at
          FROM public.nexus_queue q
         WHERE q.status = 'failed' AND q.processed_at > now() - p_since
         ORDER BY q.processed_at DESC NULLS LAST, q.id
         LIMIT p_limit;
    END IF;
END $$;

-- Dead letters, newest first (ids only: messages never carry a conversation).
CREATE FUNCTION public.broker_dead_letter_list(p_limit integer DEFAULT 100)
RETURNS TABLE (message_id uuid, queue_name text, actor_name text, args jsonb, retries integer,
               attempts integer, error text, enqueued_at timestamptz, failed_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT d.message_id, d.queue_name, d.actor_name, d.args, d.retries, d.attempts, d.error,
           d.enqueued_at, d.failed_at
      FROM public.broker_dead_letters d
     ORDER BY d.failed_at DESC, d.message_id
     LIMIT p_limit;
$$;

-- One dead letter in full (no row when unknown).
CREATE FUNCTION public.broker_dead_letter_get(p_message_id uuid)
RETURNS TABLE (message_id uuid, queue_name text, actor_name text, args jsonb, kwargs jsonb,
               options jsonb, retries integer, attempts integer, error text, traceback text,
               enqueued_at timestamptz, failed_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT d.message_id, d.queue_name, d.actor_name, d.args, d.kwargs, d.options, d.retries,
           d.attempts, d.error, d.traceback, d.enqueued_at, d.failed_at
      FROM public.broker_dead_letters d
     WHERE d.message_id = p_message_id;
$$;

-- The leads, most recently updated first.  p_momento NULL = any; p_since NULL = all.
CREATE FUNCTION public.nexus_prospects(
    p_momento text DEFAULT NULL, p_since interval DEFAULT NULL, p_limit integer DEFAULT 1000)
RETURNS TABLE (fingerprint_id text, nombre text, email text, telefono text, ocupacion text,
               nivel_interes numeric, objeciones text[], arquetipo text, momento_optimo text,
               etapa text, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.fingerprint_id, p.nombre, p.email, p.telefono, p.ocupacion, p.nivel_interes,
           p.objeciones, p.arquetipo, p.momento_optimo, p.etapa, p.created_at, p.updated_at
      FROM public.prospect_data p
     WHERE (p_momento IS NULL OR p.momento_optimo = p_momento)
       AND (p_since IS NULL OR p.updated_at > now() - p_since)
     ORDER BY p.updated_at DESC, p.fingerprint_id
     LIMIT p_limit;
$$;


-- -- acting ----------------------------------------------------------------------------------

-- Re-open failed rows as new versions: the version bump makes the dispatch trigger write
-- exactly one broker message per row.  Rows not failed (unknown, or already re-opened by
-- someone else) are left alone, unless p_strict: then nothing is written and the call raises
-- (SQLSTATE P0002) naming the first such id.  The dead letters of the re-opened rows are
-- deleted: they are handled.  Returns the number of rows re-opened.
CREATE FUNCTION public.nexus_retry_rows(p_ids uuid[], p_strict boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE
    v_ids uuid[];
    v_missing uuid;
BEGIN
    SELECT coalesce(array_agg(q.id), '{}') INTO v_ids
      FROM (SELECT q.id FROM public.nexus_queue q
             WHERE q.id = ANY (p_ids) AND q.status = 'failed'
             ORDER BY q.id
             FOR UPDATE) q;
    IF p_strict THEN
        SELECT x INTO v_missing FROM unnest(p_ids) AS x WHERE NOT (x = ANY (v_ids)) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'no failed queue row with id %', v_missing USING ERRCODE = 'P0002';
        END IF;
    END IF;
    UPDATE public.nexus_queue
       SET status = 'pending', version = version + 1, retry_count = 0, error_message = NULL,
           processed_at = NULL, started_at = NULL, enqueued_at = now(), updated_at = now(),
           visitor_hash = NULL  -- an operator's retry extracts again, never reuses a result
     WHERE id = ANY (v_ids);
    DELETE FROM public.broker_dead_letters
     WHERE actor_name = 'process_nexus_message' AND args ->> 0 = ANY (v_ids::text[]);
    RETURN cardinality(v_ids);
END $$;

-- Re-open every failed row that failed within p_since (NULL = all).
CREATE FUNCTION public.nexus_retry_failed(p_since interval DEFAULT NULL)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT public.nexus_retry_rows(coalesce(array_agg(q.id), '{}'))
      FROM public.nexus_queue q
     WHERE q.status = 'failed' AND (p_since IS NULL OR q.processed_at > now() - p_since);
$$;

-- Put dead letters back as ready messages with the same message id (attempts and retries
-- from zero); the dead-letter rows are removed.  A process_nexus_message message whose row is
-- failed at that very version would be a no-op (the worker's version fence), so that row is
-- set back to pending -- same version, retry state cleared -- and the requeued message
-- processes it: one message, no second dispatch.  A message for a superseded version is
-- requeued as is and will be a no-op.  Unknown ids are skipped unless p_strict (then nothing
-- is written and the call raises P0002).  Returns the number of messages requeued.
CREATE FUNCTION public.broker_requeue_dead_letters(p_ids uuid[], p_strict boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE
    v_ids uuid[];
    v_missing uuid;
    v_count integer;
BEGIN
    SELECT coalesce(array_agg(d.message_id), '{}') INTO v_ids
      FROM (SELECT d.message_id FROM public.broker_dead_letters d
             WHERE d.message_id = ANY (p_ids)
             ORDER BY d.message_id
             FOR UPDATE) d;
    IF p_strict THEN
        SELECT x INTO v_missing FROM unnest(p_ids) AS x WHERE NOT (x = ANY (v_ids)) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'no dead letter with id %', v_missing USING ERRCODE = 'P0002';
        END IF;
    END IF;
    WITH gone AS (
        DELETE FROM public.broker_dead_letters d WHERE d.message_id = ANY (v_ids) RETURNING d.*
    ), reopened AS (
        UPDATE public.nexus_queue q
           SET status = 'pending', retry_count = 0, error_message = NULL, processed_at = NULL,
               started_at = NULL, updated_at = now(), visitor_hash = NULL
          FROM gone r
         WHERE r.actor_name = 'process_nexus_message'
           AND jsonb_typeof(r.args) = 'array' AND jsonb_array_length(r.args) >= 2
           AND q.id::text = r.args ->> 0 AND to_jsonb(q.version) = r.args -> 1
           AND q.status = 'failed'
        RETURNING q.id
    ), requeued AS (
        INSERT INTO public.broker_messages (
            message_id, queue_name, actor_name, args, kwargs, options, message_timestamp,
            enqueued_at, due_at)
        SELECT r.message_id, r.queue_name, r.actor_name, r.args, r.kwargs, r.options,
               r.message_timestamp, r.enqueued_at, clock_timestamp()
          FROM gone r
        ON CONFLICT (message_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM requeued;
    RETURN v_count;
END $$;

-- Requeue every dead letter.
CREATE FUNCTION public.broker_requeue_all_dead_letters()
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT public.broker_requeue_dead_letters(coalesce(array_agg(message_id), '{}'))
      FROM public.broker_dead_letters;
$$;

-- Delete dead letters that failed more than p_older_than ago.  Returns how many.
CREATE FUNCTION public.broker_purge_dead_letters(p_older_than interval)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'p_older_than must be a non-negative interval' USING ERRCODE = '22023';
    END IF;
    DELETE FROM public.broker_dead_letters WHERE failed_at < clock_timestamp() - p_older_than;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

-- -- erasure and retention -------------------------------------------------------------------

-- Erase a visitor: the prospect row, every queue row with that fingerprint, their live broker
-- messages and dead letters (matched by queue id), and the merge ledger's rows
-- (prospect_merges).  Counts per kind; idempotent (a second call deletes nothing).
CREATE FUNCTION public.nexus_forget_visitor(
    p_fingerprint text,
    OUT prospects integer, OUT queue_rows integer, OUT merges integer,
    OUT broker_messages integer, OUT dead_letters integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE
    v_ids text[];
BEGIN
    IF p_fingerprint IS NULL OR length(p_fingerprint) = 0 THEN
        RAISE EXCEPTION 'p_fingerprint must not be empty' USING ERRCODE = '22023';
    END IF;
    -- Lock in the worker's order -- queue rows, then the prospect -- so a worker completing
    -- one of these rows right now finishes first (or finds its row gone), never deadlocks.
    SELECT coalesce(array_agg(q.id::text), '{}') INTO v_ids
      FROM (SELECT q.id FROM public.nexus_queue q WHERE q.fingerprint = p_fingerprint
             ORDER BY q.id FOR UPDATE) q;
    PERFORM 1 FROM public.prospect_data WHERE fingerprint_id = p_fingerprint FOR UPDATE;

    DELETE FROM public.broker_messages m
     WHERE m.actor_name = 'process_nexus_message' AND m.args ->> 0 = ANY (v_ids);
    GET DIAGNOSTICS broker_messages = ROW_COUNT;
    DELETE FROM public.broker_dead_letters d
     WHERE d.actor_name = 'process_nexus_message' AND d.args ->> 0 = ANY (v_ids);
    GET DIAGNOSTICS dead_letters = ROW_COUNT;

    DELETE FROM public.prospect_merges m
     WHERE m.fingerprint_id = p_fingerprint OR m.queue_id::text = ANY (v_ids);
    GET DIAGNOSTICS merges = ROW_COUNT;

    DELETE FROM public.nexus_queue q WHERE q.id::text = ANY (v_ids);
    GET DIAGNOSTICS queue_rows = ROW_COUNT;
    DELETE FROM public.prospect_data p WHERE p.fingerprint_id = p_fingerprint;
    GET DIAGNOSTICS prospects = ROW_COUNT;
END $$;

-- The SQL face of `nexus forget`: the number of rows deleted, all kinds together.
CREATE FUNCTION public.forget_visitor(p_fingerprint text)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT f.prospects + f.queue_rows + f.merges + f.broker_messages + f.dead_letters
      FROM public.nexus_forget_visitor(p_fingerprint) f;
$$;

-- Retention of prospects: delete at most p_limit prospects not updated for p_max_age, with
-- their merge-ledger rows (when that table exists).  Returns the number of prospects deleted.
-- Queue rows have their own retention (cleanup_old_nexus_queue).
CREATE FUNCTION public.nexus_expire_prospects(p_max_age interval, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_ids text[];
BEGIN
    IF p_max_age IS NULL OR p_max_age <= interval '0' THEN
        RAISE EXCEPTION 'p_max_age must be a positive interval' USING ERRCODE = '22023';
    END IF;
    SELECT coalesce(array_agg(d.fingerprint_id), '{}') INTO v_ids
      FROM (SELECT p.fingerprint_id FROM public.prospect_data p
             WHERE p.updated_at < now() - p_max_age
             ORDER BY p.updated_at
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED) d;
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- The ledger first, in case it references its prospect.
    DELETE FROM public.prospect_merges m WHERE m.fingerprint_id = ANY (v_ids);
    DELETE FROM public.prospect_data p WHERE p.fingerprint_id = ANY (v_ids);
    RETURN cardinality(v_ids);
END $$;

-- -- privileges ------------------------------------------------------------------------------

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'public.nexus_status_counts()',
        'public.nexus_oldest_ages()',
        'public.nexus_extractors_24h()',
        'public.broker_queue_stats()',
        'public.broker_live_workers()',
        'public.nexus_clock_last_runs()',
        'public.nexus_failed_rows(interval, integer)',
        'public.broker_dead_letter_list(integer)',
        'public.broker_dead_letter_get(uuid)',
        'public.nexus_prospects(text, interval, integer)',
        'public.nexus_retry_rows(uuid[], boolean)',
        'public.nexus_retry_failed(interval)',
        'public.broker_requeue_dead_letters(uuid[], boolean)',
        'public.broker_requeue_all_dead_letters()',
        'public.broker_purge_dead_letters(interval)',
        'public.nexus_forget_visitor(text)',
        'public.forget_visitor(text)',
        'public.nexus_expire_prospects(interval, integer)'
    ] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO nexus_worker', f);
        IF f NOT IN ('public.nexus_forget_visitor(text)', 'public.forget_visitor(text)',
                     'public.broker_purge_dead_letters(interval)',
                     'public.nexus_expire_prospects(interval, integer)') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO nexus_web', f);
        END IF;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM anon', f);
        END IF;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM authenticated', f);
        END IF;
    END LOOP;
END $$;
