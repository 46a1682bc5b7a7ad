-- nexus 0006: least privilege, Supabase included.
--
-- Roles: nexus_web (the internet-facing web process) gets functions only: enqueue, health and
-- stats (and, from later migrations, the admin and CLI functions); no privilege on any table.
-- nexus_worker keeps its table grants; nexus_producer may only enqueue.
--
-- Supabase grants everything in schema public to its API roles `anon` and `authenticated` by
-- default privileges (ALTER DEFAULT PRIVILEGES ... GRANT ALL ON TABLES/FUNCTIONS/SEQUENCES TO
-- anon, authenticated), and EXECUTE on a new function goes to PUBLIC by default anywhere.  So
-- every object a migration creates starts out callable and readable from the public API.
-- ALTER DEFAULT PRIVILEGES cannot fix that from here: it only edits the defaults of the roles
-- we act as, per-schema entries can add to the global defaults but never take away (PUBLIC's
-- EXECUTE stays), and revoking Supabase's own entries would change the user's other tables in
-- the shared public schema.  Instead nexus_harden_privileges() below revokes, object by object,
-- on every nexus object, and `nexus db upgrade` (nexus/migrations.py) runs it inside each
-- migration's transaction and once more at the end of every upgrade, so an object created by
-- any later migration is never committed with those grants, and drift is repaired.

-- A nexus object is one in schema public whose name starts with nexus_, broker_, prospect_ or
-- llm_calls_ (llm_calls' identity sequence),
-- or one of the seed's function names below.  Nothing else in the schema is touched (on
-- Supabase it is shared with the user's own tables).  New migrations name their objects so.
CREATE FUNCTION public.nexus_is_nexus_object(p_name name)
RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
    SELECT p_name ~ '^(nexus|broker|prospect|llm_calls)_'
        OR p_name IN ('enqueue_nexus_message', 'update_queue_status', 'update_prospect_data',
                      'cleanup_old_nexus_queue', 'forget_visitor', 'llm_calls')
$$;

-- Revoke from PUBLIC, anon and authenticated (those that exist) every privilege on every nexus
-- table, view, sequence and function; revoke table privileges from nexus_web and
-- nexus_producer too (they get functions only); enable row-level security on every nexus
-- table, with a policy for nexus_worker where a table has none.  Idempotent.  Runs with the
-- privileges of its caller (the role that migrates, owner of the objects).
CREATE FUNCTION public.nexus_harden_privileges()
RETURNS integer
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    grantees text;
    fn_grantees text;
    obj record;
    touched integer := 0;
BEGIN
    SELECT string_agg(g, ', ') INTO fn_grantees FROM (
        SELECT 'PUBLIC' AS g
        UNION ALL
        SELECT quote_ident(rolname) FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
    ) AS roles;
    SELECT string_agg(g, ', ') INTO grantees FROM (
        SELECT 'PUBLIC' AS g
        UNION ALL
        SELECT quote_ident(rolname) FROM pg_roles
         WHERE rolname IN ('anon', 'authenticated', 'nexus_web', 'nexus_producer')
    ) AS roles;

    FOR obj IN
        SELECT c.oid, c.relname, c.relkind, c.relrowsecurity
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND public.nexus_is_nexus_object(c.relname)
    LOOP
        IF obj.relkind = 'S' THEN
            EXECUTE format('REVOKE ALL ON SEQUENCE public.%I FROM %s', obj.relname, grantees);
        ELSE
            EXECUTE format('REVOKE ALL ON TABLE public.%I FROM %s', obj.relname, grantees);
        END IF;
        IF obj.relkind IN ('r', 'p') THEN
            IF NOT obj.relrowsecurity THEN
                EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', obj.relname);
            END IF;
            IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = obj.oid) THEN
                EXECUTE format('CREATE POLICY nexus_worker_all ON public.%I TO nexus_worker '
                               'USING (true) WITH CHECK (true)', obj.relname);
            END IF;
        END IF;
        touched := touched + 1;
    END LOOP;

    FOR obj IN
        SELECT p.oid::regprocedure AS signature, p.prokind
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
           AND public.nexus_is_nexus_object(p.proname)
    LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s',
                       CASE obj.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                       obj.signature, fn_grantees);
        touched := touched + 1;
    END LOOP;
    RETURN touched;
END
$$;

-- The web's health check: the database answers and the schema is there.  Returns the newest
-- applied migration.
CREATE FUNCTION public.nexus_health()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT max(version) FROM public.nexus_schema_migrations
$$;

-- The web's /api/nexus/stats in one call: the seed's monitoring query (per status, count and
-- average processing seconds over the last 24 hours, from when the current version was
-- enqueued), the oldest pending row's age, and the broker's backlog per queue.
CREATE FUNCTION public.nexus_stats()
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
WITH by_status AS (
    SELECT s.status,
           count(q.id) AS count,
           avg(extract(epoch FROM (q.processed_at - q.enqueued_at))) AS avg_s
      FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed']) AS s(status)
      LEFT JOIN public.nexus_queue q
             ON q.status = s.status AND q.enqueued_at > now() - interval '24 hours'
     GROUP BY s.status
), live AS (
    SELECT queue_name,
           count(*) FILTER (WHERE state = 'ready' AND due_at <= clock_timestamp()) AS ready,
           count(*) FILTER (WHERE state = 'ready' AND due_at > clock_timestamp()) AS delayed,
           count(*) FILTER (WHERE state = 'claimed') AS claimed,
           min(enqueued_at) FILTER (WHERE state = 'ready' AND due_at <= clock_timestamp())
               AS oldest_ready_at
      FROM public.broker_messages
     GROUP BY queue_name
), dead AS (
    SELECT queue_name, count(*) AS dead_letters
      FROM public.broker_dead_letters
     GROUP BY queue_name
), queues AS (
    SELECT coalesce(live.queue_name, dead.queue_name) AS queue_name,
           coalesce(live.ready, 0) AS ready,
           coalesce(live.delayed, 0) AS delayed,
           coalesce(live.claimed, 0) AS claimed,
           coalesce(dead.dead_letters, 0) AS dead_letters,
           extract(epoch FROM clock_timestamp() - live.oldest_ready_at)::float8 AS oldest_ready_s
      FROM live FULL JOIN dead ON dead.queue_name = live.queue_name
)
SELECT jsonb_build_object(
    'by_status', (SELECT jsonb_object_agg(status, jsonb_build_object(
                      'count', count,
                      'avg_processing_time_sec', round(avg_s::numeric, 3)))
                    FROM by_status),
    'oldest_pending_age_sec', (SELECT round(extract(epoch FROM now() - min(enqueued_at)), 3)
                                 FROM public.nexus_queue WHERE status = 'pending'),
    'broker', (SELECT jsonb_build_object(
                   'ready', coalesce(sum(ready), 0),
                   'delayed', coalesce(sum(delayed), 0),
                   'claimed', coalesce(sum(claimed), 0),
                   'backlog', coalesce(sum(ready + delayed + claimed), 0),
                   'dead_letters', coalesce(sum(dead_letters), 0),
                   'queues', coalesce(jsonb_object_agg(queue_name, jsonb_build_object(
                       'ready', ready, 'delayed', delayed, 'claimed', claimed,
                       'dead_letters', dead_letters, 'oldest_ready_s', oldest_ready_s))
                       FILTER (WHERE queue_name IS NOT NULL), '{}'::jsonb))
                 FROM queues)
)
$$;

-- Row-level security on every table (broker tables, clock slots and the version table too).
-- nexus_schema_migrations is created by nexus/migrations.py, not a migration file: no grant,
-- no policy, so only its owner (the migrating role) reads it; nexus_health() reads it for the
-- web.  The other tables get their nexus_worker policy from nexus_harden_privileges() below.
ALTER TABLE public.nexus_schema_migrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY nexus_owner_only ON public.nexus_schema_migrations TO nexus_worker USING (false);
REVOKE ALL ON public.nexus_schema_migrations FROM PUBLIC;

-- What each role may call.  The web gets functions, never tables.
GRANT EXECUTE ON FUNCTION public.nexus_enqueue(jsonb, text, text, jsonb) TO nexus_web;
GRANT EXECUTE ON FUNCTION public.enqueue_nexus_message(jsonb, text, text, jsonb) TO nexus_web;
GRANT EXECUTE ON FUNCTION public.nexus_health() TO nexus_web, nexus_worker;
GRANT EXECUTE ON FUNCTION public.nexus_stats() TO nexus_web, nexus_worker;

SELECT public.nexus_harden_privileges();
