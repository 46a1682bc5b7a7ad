-- nexus 0010: what /metrics and /admin read beyond 0008's operation functions, cheap with
-- millions of rows, through functions only (the web process runs as nexus_web: no privilege
-- on any table).
--
-- Row counts by status are kept as a tally maintained by triggers, not counted at scrape time
-- (a count(*) over 1,000,000 rows takes longer than a scrape may).  Writers never update a
-- shared counter row -- that would serialise every POST on one row lock -- they only append
-- deltas to an unindexed table; readers fold the deltas into the tally (one at a time, under
-- an advisory lock) and sum what is left.  The same deltas, bucketed by minute, give the
-- dashboard's per-minute chart (accepted / completed / failed) without scanning the queue.

-- Folded tally: one row per (minute, status); minute '-infinity' holds everything older than
-- the chart's reach, where only ``net`` matters.
CREATE TABLE public.nexus_queue_tally (
    minute      timestamptz NOT NULL,
    status      text NOT NULL,
    net         bigint NOT NULL DEFAULT 0,  -- rows that entered the status minus rows that left
    entered     bigint NOT NULL DEFAULT 0,  -- transitions into the status
    accepted    bigint NOT NULL DEFAULT 0,  -- new versions accepted (inserts, changed resends)
    PRIMARY KEY (minute, status)
);

-- Deltas appended by the triggers, folded into nexus_queue_tally by its readers.
CREATE TABLE public.nexus_queue_tally_delta (
    minute      timestamptz NOT NULL,
    status      text NOT NULL,
    net         bigint NOT NULL,
    entered     bigint NOT NULL,
    accepted    bigint NOT NULL
);

CREATE FUNCTION public.nexus_tally_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO public.nexus_queue_tally_delta (minute, status, net, entered, accepted)
    SELECT date_trunc('minute', now()), status, count(*), count(*), count(*)
      FROM inserted GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION public.nexus_tally_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO public.nexus_queue_tally_delta (minute, status, net, entered, accepted)
    SELECT date_trunc('minute', now()), status, -count(*), 0, 0
      FROM deleted GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION public.nexus_tally_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m timestamptz := date_trunc('minute', now());
    new_version integer := (NEW.version IS DISTINCT FROM OLD.version)::integer;
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO public.nexus_queue_tally_delta (minute, status, net, entered, accepted)
        VALUES (m, OLD.status, -1, 0, 0), (m, NEW.status, 1, 1, new_version);
    ELSE
        INSERT INTO public.nexus_queue_tally_delta (minute, status, net, entered, accepted)
        VALUES (m, NEW.status, 0, 0, new_version);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION public.nexus_tally_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM public.nexus_queue_tally;
    DELETE FROM public.nexus_queue_tally_delta;
    RETURN NULL;
END $$;

-- Start from the rows already there; the lock keeps writers out until the triggers exist.
LOCK TABLE public.nexus_queue IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO public.nexus_queue_tally (minute, status, net)
SELECT '-infinity', status, count(*) FROM public.nexus_queue GROUP BY status;

CREATE TRIGGER nexus_queue_tally_insert
    AFTER INSERT ON public.nexus_queue
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION public.nexus_tally_inserted();
CREATE TRIGGER nexus_queue_tally_delete
    AFTER DELETE ON public.nexus_queue
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION public.nexus_tally_deleted();
CREATE TRIGGER nexus_queue_tally_update
    AFTER UPDATE OF status, version ON public.nexus_queue
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION public.nexus_tally_updated();
CREATE TRIGGER nexus_queue_tally_truncate
    AFTER TRUNCATE ON public.nexus_queue
    FOR EACH STATEMENT EXECUTE FUNCTION public.nexus_tally_truncated();

-- Fold the deltas into the tally, and minutes older than the chart's reach into '-infinity'.
-- One folder at a time; a reader that finds the lock taken reads tally + deltas unfolded,
-- which sums to the same numbers.
CREATE FUNCTION public.nexus_tally_fold() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    horizon timestamptz := date_trunc('minute', now()) - interval '2 hours';
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('public.nexus_queue_tally')) THEN
        RETURN;
    END IF;
    WITH moved AS (DELETE FROM public.nexus_queue_tally_delta RETURNING *),
    old AS (
        DELETE FROM public.nexus_queue_tally
         WHERE minute > '-infinity' AND minute < horizon
        RETURNING minute, status, net, entered, accepted),
    folded AS (
        SELECT CASE WHEN minute < horizon THEN '-infinity' ELSE minute END AS minute,
               status, sum(net) AS net,
               sum(CASE WHEN minute < horizon THEN 0 ELSE entered END) AS entered,
               sum(CASE WHEN minute < horizon THEN 0 ELSE accepted END) AS accepted
          FROM (SELECT * FROM moved UNION ALL SELECT * FROM old) AS d
         GROUP BY 1, 2)
    INSERT INTO public.nexus_queue_tally AS t (minute, status, net, entered, accepted)
    SELECT minute, status, net, entered, accepted FROM folded
    ON CONFLICT (minute, status) DO UPDATE
       SET net = t.net + excluded.net,
           entered = t.entered + excluded.entered,
           accepted = t.accepted + excluded.accepted;
END $$;

-- Rows by status, all time (exact: tally plus unfolded deltas).
CREATE FUNCTION public.nexus_admin_status_counts()
RETURNS TABLE (status text, count bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM public.nexus_tally_fold();
    RETURN QUERY
    SELECT s.status, coalesce(sum(d.net), 0)::bigint
      FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed']) AS s(status)
      LEFT JOIN (SELECT t.status, t.net FROM public.nexus_queue_tally t
                 UNION ALL
                 SELECT u.status, u.net FROM public.nexus_queue_tally_delta u) AS d
        ON d.status = s.status
     GROUP BY s.status
     ORDER BY array_position(ARRAY['pending', 'processing', 'completed', 'failed'], s.status);
END $$;

-- Accepted versions, completions and failures per minute over the last p_minutes (<= 120),
-- oldest first, the current minute included.
CREATE FUNCTION public.nexus_admin_minutes(p_minutes integer DEFAULT 60)
RETURNS TABLE (minute timestamptz, accepted bigint, completed bigint, failed bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    last_minute timestamptz := date_trunc('minute', now());
    first_minute timestamptz;
BEGIN
    IF p_minutes IS NULL OR p_minutes < 1 OR p_minutes > 120 THEN
        RAISE EXCEPTION 'p_minutes must be between 1 and 120, got %', p_minutes
            USING ERRCODE = '22023';
    END IF;
    first_minute := last_minute - (p_minutes - 1) * interval '1 minute';
    PERFORM public.nexus_tally_fold();
    RETURN QUERY
    SELECT g.m,
           coalesce(sum(d.accepted), 0)::bigint,
           coalesce(sum(d.entered) FILTER (WHERE d.status = 'completed'), 0)::bigint,
           coalesce(sum(d.entered) FILTER (WHERE d.status = 'failed'), 0)::bigint
      FROM generate_series(first_minute, last_minute, interval '1 minute') AS g(m)
      LEFT JOIN (SELECT t.minute, t.status, t.entered, t.accepted
                   FROM public.nexus_queue_tally t WHERE t.minute >= first_minute
                 UNION ALL
                 SELECT u.minute, u.status, u.entered, u.accepted
                   FROM public.nexus_queue_tally_delta u WHERE u.minute >= first_minute) AS d
        ON d.minute = g.m
     GROUP BY g.m
     ORDER BY g.m;
END $$;

-- Processing time (enqueued -> completed, seconds) of the versions completed in the last
-- p_window_s seconds: how many, median and 95th percentile.  Reads the partial index below.
CREATE INDEX nexus_queue_completed_idx ON public.nexus_queue (processed_at)
    INCLUDE (enqueued_at) WHERE status = 'completed';

CREATE FUNCTION public.nexus_admin_processing_times(p_window_s integer DEFAULT 3600)
RETURNS TABLE (completed bigint, p50_s double precision, p95_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY s)
      FROM (SELECT extract(epoch FROM q.processed_at - q.enqueued_at)::double precision AS s
              FROM public.nexus_queue q
             WHERE q.status = 'completed'
               AND q.processed_at > now() - make_interval(secs => p_window_s)) AS t;
$$;

-- Age of the oldest pending version (nexus_oldest_ages() of 0008): the first entry of this
-- partial index, not a walk through every pending row of a large backlog.
CREATE INDEX nexus_queue_pending_idx ON public.nexus_queue (enqueued_at) WHERE status = 'pending';

-- The seed's 24-hour monitoring query (/api/nexus/stats) filters on enqueued_at: with this
-- index it reads the last day's entries only (index-only, once vacuumed).
CREATE INDEX nexus_queue_enqueued_at_idx ON public.nexus_queue (enqueued_at)
    INCLUDE (status, processed_at);

-- Security: tables for nexus_worker only, row-level security on; functions revoked from
-- PUBLIC (and Supabase's anon / authenticated where they exist), readers granted to the web.
REVOKE ALL ON public.nexus_queue_tally, public.nexus_queue_tally_delta FROM PUBLIC;
ALTER TABLE public.nexus_queue_tally ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.nexus_queue_tally_delta ENABLE ROW LEVEL SECURITY;
CREATE POLICY nexus_worker_all ON public.nexus_queue_tally
    TO nexus_worker USING (true) WITH CHECK (true);
CREATE POLICY nexus_worker_all ON public.nexus_queue_tally_delta
    TO nexus_worker USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE
    ON public.nexus_queue_tally, public.nexus_queue_tally_delta TO nexus_worker;

REVOKE EXECUTE ON FUNCTION
    public.nexus_tally_inserted(), public.nexus_tally_deleted(), public.nexus_tally_updated(),
    public.nexus_tally_truncated(), public.nexus_tally_fold(),
    public.nexus_admin_status_counts(), public.nexus_admin_minutes(integer),
    public.nexus_admin_processing_times(integer)
FROM PUBLIC;

-- The clock's sweeper folds the deltas every 30 s, so they stay few between scrapes.
GRANT EXECUTE ON FUNCTION public.nexus_tally_fold() TO nexus_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON public.nexus_queue_tally, '
                           'public.nexus_queue_tally_delta FROM %I', r);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION public.nexus_admin_status_counts(), '
                           'public.nexus_admin_minutes(integer), '
                           'public.nexus_admin_processing_times(integer) FROM %I', r);
        END IF;
    END LOOP;
END $$;

GRANT EXECUTE ON FUNCTION
    public.nexus_admin_status_counts(), public.nexus_admin_minutes(integer),
    public.nexus_admin_processing_times(integer)
TO nexus_web, nexus_worker;
