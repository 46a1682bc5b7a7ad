-- nexus 0003: dispatch to the workers, and the clock's slot ledger.

-- Exactly one dispatch path: every new version of a row -- an INSERT (from HTTP, from
-- enqueue_nexus_message in psql, or a plain INSERT) or an UPDATE that bumps ``version`` --
-- gets exactly one broker message, written in the same transaction.  A status change does not
-- touch ``version``, so it never re-dispatches.  Messages carry ids, never the conversation.
CREATE FUNCTION public.nexus_dispatch()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM public.broker_enqueue(
        'nexus', 'process_nexus_message', jsonb_build_array(NEW.id::text, NEW.version));
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION public.nexus_dispatch() FROM PUBLIC;

CREATE TRIGGER nexus_queue_dispatch_new
    AFTER INSERT ON public.nexus_queue
    FOR EACH ROW EXECUTE FUNCTION public.nexus_dispatch();

CREATE TRIGGER nexus_queue_dispatch_version
    AFTER UPDATE OF version ON public.nexus_queue
    FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION public.nexus_dispatch();

-- One row per periodic job and time slot: the first clock to insert it fires the job, so
-- several clocks running at once still fire each slot once.
CREATE TABLE public.nexus_clock_slots (
    job         text NOT NULL,
    slot        timestamptz NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, slot)
);

REVOKE ALL ON public.nexus_clock_slots FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON public.nexus_clock_slots TO nexus_worker;
