-- nexus 0002: the Dramatiq broker's tables (see nexus/broker/).  Runs on PostgreSQL 15 and 16.
--
-- broker_messages holds live messages only: ready (due now), delayed (due later) and claimed.
-- An acked message is deleted; a dead one moves to broker_dead_letters.  So the hot table stays
-- the size of the backlog, and the claim reads a partial index of ready rows.

CREATE TABLE public.broker_workers (
    id              uuid PRIMARY KEY,
    hostname        text NOT NULL,
    pid             integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until     timestamptz NOT NULL           -- its claims are released after this
);

CREATE TABLE public.broker_messages (
    message_id          uuid PRIMARY KEY,
    queue_name          text NOT NULL,
    actor_name          text NOT NULL,
    args                jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(args) = 'array'),
    kwargs              jsonb NOT NULL DEFAULT '{}'::jsonb,
    options             jsonb NOT NULL DEFAULT '{}'::jsonb,
    message_timestamp   bigint NOT NULL              -- ms since the epoch, as Dramatiq has it
                        DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    enqueued_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    due_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    state               text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'claimed')),
    worker_id           uuid,                        -- the claiming worker (broker_workers.id)
    claimed_at          timestamptz,
    attempts            integer NOT NULL DEFAULT 0,  -- claims so far; fences ack/retry/nack
    retries             integer NOT NULL DEFAULT 0,  -- failed attempts so far
    last_error          text,
    CHECK ((state = 'claimed') = (worker_id IS NOT NULL))
);

-- The claim: ready rows of one queue in due order.  Claimed rows are not in this index.
CREATE INDEX broker_messages_ready_idx ON public.broker_messages (queue_name, due_at)
    WHERE state = 'ready';
-- The reaper: claims of workers whose lease expired.
CREATE INDEX broker_messages_claimed_idx ON public.broker_messages (worker_id)
    WHERE state = 'claimed';
-- "Is there a live message for this actor and first argument?" (the pipeline's sweeper).
CREATE INDEX broker_messages_actor_arg_idx ON public.broker_messages (actor_name, (args ->> 0));

CREATE TABLE public.broker_dead_letters (
    message_id          uuid PRIMARY KEY,
    queue_name          text NOT NULL,
    actor_name          text NOT NULL,
    args                jsonb NOT NULL,
    kwargs              jsonb NOT NULL,
    options             jsonb NOT NULL,
    message_timestamp   bigint NOT NULL,
    enqueued_at         timestamptz NOT NULL,
    attempts            integer NOT NULL,
    retries             integer NOT NULL,
    error               text,
    traceback           text,
    failed_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX broker_dead_letters_failed_at_idx ON public.broker_dead_letters (failed_at);
CREATE INDEX broker_dead_letters_queue_idx ON public.broker_dead_letters (queue_name, failed_at);

-- Wake the consumers of a queue once per statement (not per row): a notifying commit is
-- serialised by PostgreSQL, so one notify per batch keeps enqueue throughput up.  Consumers
-- LISTEN on broker_wakeup; the payload is the queue name.  Delivered on commit.
CREATE FUNCTION public.broker_notify_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_notify('broker_wakeup', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM inserted) AS q;
    RETURN NULL;
END $$;

CREATE TRIGGER broker_messages_notify
    AFTER INSERT ON public.broker_messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION public.broker_notify_inserted();

-- Enqueue one message from SQL (e.g. from a trigger, so a row and its message commit
-- together).  Due at clock_timestamp() + p_delay_ms.  Returns the message id.
CREATE FUNCTION public.broker_enqueue(
    p_queue_name text, p_actor_name text, p_args jsonb,
    p_kwargs jsonb DEFAULT '{}'::jsonb, p_options jsonb DEFAULT '{}'::jsonb,
    p_delay_ms bigint DEFAULT 0)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_id uuid := gen_random_uuid();
    v_now timestamptz := clock_timestamp();
BEGIN
    IF p_delay_ms < 0 THEN
        RAISE EXCEPTION 'broker_enqueue: p_delay_ms must not be negative, got %', p_delay_ms;
    END IF;
    INSERT INTO public.broker_messages (
        message_id, queue_name, actor_name, args, kwargs, options,
        message_timestamp, enqueued_at, due_at)
    VALUES (
        v_id, p_queue_name, p_actor_name, coalesce(p_args, '[]'::jsonb),
        coalesce(p_kwargs, '{}'::jsonb), coalesce(p_options, '{}'::jsonb),
        (extract(epoch FROM v_now) * 1000)::bigint, v_now,
        v_now + p_delay_ms * interval '1 millisecond');
    RETURN v_id;
END $$;

-- Release the claims (running and prefetched) of every worker whose lease expired, and of
-- workers that no longer exist (a claim older than the lease whose worker row is gone), then
-- forget the expired workers.  Right after a server restart every lease counts from the
-- restart, so workers get the time to reconnect and renew before anything of theirs is taken.
-- Returns the number of messages released; their queues are woken.
CREATE FUNCTION public.broker_reap(p_lease_ms bigint) RETURNS integer
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_lease interval := p_lease_ms * interval '1 millisecond';
    v_released integer;
    v_queues text[];
BEGIN
    IF pg_postmaster_start_time() + v_lease > clock_timestamp() THEN
        RETURN 0;
    END IF;
    WITH released AS (
        UPDATE public.broker_messages m
        SET state = 'ready', worker_id = NULL, claimed_at = NULL
        WHERE m.state = 'claimed'
          AND NOT EXISTS (
              SELECT FROM public.broker_workers w
              WHERE w.id = m.worker_id AND w.lease_until >= clock_timestamp())
          AND (m.claimed_at < clock_timestamp() - v_lease
               OR EXISTS (SELECT FROM public.broker_workers w WHERE w.id = m.worker_id))
        RETURNING m.queue_name
    )
    SELECT count(*), array_agg(DISTINCT queue_name) INTO v_released, v_queues FROM released;
    DELETE FROM public.broker_workers WHERE lease_until < clock_timestamp();
    PERFORM pg_notify('broker_wakeup', q) FROM unnest(v_queues) AS q;
    RETURN v_released;
END $$;

REVOKE EXECUTE ON FUNCTION public.broker_enqueue(text, text, jsonb, jsonb, jsonb, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.broker_reap(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.broker_notify_inserted() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.broker_enqueue(text, text, jsonb, jsonb, jsonb, bigint) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.broker_reap(bigint) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.broker_notify_inserted() TO nexus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON public.broker_workers, public.broker_messages, public.broker_dead_letters TO nexus_worker;
