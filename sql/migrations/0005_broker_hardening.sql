-- nexus 0005: the broker's delivery cap (see nexus/broker/ and sql/broker.sql).
--
-- attempts counts every claim of a message (it is also the fence of its outcome).  A claim
-- given back before the message started (prefetched messages at shutdown or after a lost
-- lease) is counted in releases as well, so attempts - releases is the number of deliveries
-- that may have run.  The claim dead-letters a message whose deliveries reached its
-- max_retries + 3 (a message that kills its worker ends visibly instead of looping).

ALTER TABLE public.broker_messages
    ADD COLUMN releases integer NOT NULL DEFAULT 0;
