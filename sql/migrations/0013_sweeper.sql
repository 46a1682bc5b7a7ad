-- nexus 0013: the sweeper looks up the dead letters of a stuck row's version (a row whose message
-- the broker gave up on is marked failed, not re-dispatched): index them like live messages.
CREATE INDEX broker_dead_letters_actor_arg_idx
    ON public.broker_dead_letters (actor_name, (args ->> 0));
