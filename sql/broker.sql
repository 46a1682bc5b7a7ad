-- The broker's queries (nexus/broker/), loaded by name.  Schema: migrations/0002_broker.sql.
-- Every deadline is computed from the database clock (clock_timestamp(), statement_timestamp()),
-- never from Python's.

-- name: enqueue
-- Idempotent on the message id: an id that is live or dead-lettered already is a no-op (the
-- first message stands; its payload is not compared).  Acked messages are deleted, so their
-- ids are not remembered.
INSERT INTO broker_messages (
    message_id, queue_name, actor_name, args, kwargs, options, message_timestamp, due_at)
SELECT CAST(:message_id AS uuid), :queue_name, :actor_name, CAST(:args AS jsonb),
       CAST(:kwargs AS jsonb), CAST(:options AS jsonb), :message_timestamp,
       clock_timestamp() + :delay_ms * interval '1 millisecond'
WHERE NOT EXISTS (SELECT FROM broker_dead_letters WHERE message_id = CAST(:message_id AS uuid))
ON CONFLICT (message_id) DO NOTHING

-- name: enqueue_many
-- One statement for a batch (one notify per statement); idempotent on the ids like enqueue
-- (an id repeated within the batch is stored once).
INSERT INTO broker_messages (
    message_id, queue_name, actor_name, args, kwargs, options, message_timestamp, due_at)
SELECT m.message_id::uuid, m.queue_name, m.actor_name, m.args::jsonb, m.kwargs::jsonb,
       m.options::jsonb, m.message_timestamp,
       clock_timestamp() + m.delay_ms * interval '1 millisecond'
FROM unnest(CAST(:message_ids AS text[]), CAST(:queue_names AS text[]),
            CAST(:actor_names AS text[]), CAST(:args AS text[]), CAST(:kwargs AS text[]),
            CAST(:options AS text[]), CAST(:timestamps AS bigint[]), CAST(:delays AS bigint[]))
     AS m(message_id, queue_name, actor_name, args, kwargs, options, message_timestamp, delay_ms)
WHERE NOT EXISTS (SELECT FROM broker_dead_letters d WHERE d.message_id = m.message_id::uuid)
ON CONFLICT (message_id) DO NOTHING

-- name: claim
-- Hand out up to :limit due messages of one queue to worker :worker_id.  SKIP LOCKED lets
-- concurrent consumers take disjoint batches; attempts is the fence of this claim.
-- statement_timestamp(), not clock_timestamp(): a volatile bound could not be an index
-- condition, and every delayed row would be read and filtered out.
-- The delivery cap, in the same statement: a message already delivered (attempts - releases)
-- max_retries + :extra_deliveries times -- its max_retries from its options, else its actor's
-- (:max_retries, a JSON object by actor name), else :default_max_retries -- goes to the dead
-- letters instead (its workers died under it); it is returned with spent = true.
WITH picked AS (
    SELECT message_id,
           attempts - releases >= coalesce(
               CASE WHEN jsonb_typeof(options -> 'max_retries') = 'number'
                    THEN (options ->> 'max_retries')::numeric END,
               (CAST(:max_retries AS jsonb) ->> actor_name)::numeric,
               :default_max_retries) + :extra_deliveries AS spent
    FROM broker_messages
    WHERE queue_name = :queue_name AND state = 'ready' AND due_at <= statement_timestamp()
    ORDER BY due_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE broker_messages m
    SET state = 'claimed', worker_id = :worker_id, claimed_at = clock_timestamp(),
        attempts = m.attempts + 1
    FROM picked
    WHERE m.message_id = picked.message_id AND NOT picked.spent
    RETURNING m.message_id, m.queue_name, m.actor_name, m.args, m.kwargs, m.options,
              m.message_timestamp, m.attempts, m.retries
), dead AS (
    DELETE FROM broker_messages m
    USING picked
    WHERE m.message_id = picked.message_id AND picked.spent
    RETURNING m.*
), buried AS (
    INSERT INTO broker_dead_letters (
        message_id, queue_name, actor_name, args, kwargs, options, message_timestamp,
        enqueued_at, attempts, retries, error)
    SELECT message_id, queue_name, actor_name, args, kwargs, options, message_timestamp,
           enqueued_at, attempts, retries,
           'delivered ' || (attempts - releases) || ' times without an outcome (worker lost)'
    FROM dead
    ON CONFLICT (message_id) DO NOTHING
)
SELECT claimed.*, false AS spent FROM claimed
UNION ALL
SELECT message_id, queue_name, actor_name, args, kwargs, options, message_timestamp, attempts,
       retries, true FROM dead

-- name: next_due
-- Milliseconds until the next ready message of the queue is due (negative: due already).
SELECT extract(epoch FROM min(due_at) - clock_timestamp()) * 1000 AS due_in_ms
FROM broker_messages
WHERE queue_name = :queue_name AND state = 'ready'

-- name: ack
-- Delete finished messages, fenced by their claim (attempt number, still claimed): a message
-- rescheduled, released or re-claimed since is left alone, and writing a batch twice is a no-op.
-- Every outcome query returns the number of messages it wrote (the rest were fenced out).
WITH acked AS (
    DELETE FROM broker_messages m
    USING unnest(CAST(:message_ids AS uuid[]), CAST(:attempts AS integer[]))
          AS f(message_id, attempts)
    WHERE m.message_id = f.message_id AND m.attempts = f.attempts AND m.state = 'claimed'
    RETURNING 1
)
SELECT count(*) AS written FROM acked

-- name: retry
-- Reschedule in place: the same row, due after its backoff, claim released, retries counted.
WITH rescheduled AS (
    UPDATE broker_messages m
    SET state = 'ready', worker_id = NULL, claimed_at = NULL, retries = m.retries + 1,
        due_at = clock_timestamp() + f.delay_ms * interval '1 millisecond', last_error = f.error
    FROM unnest(CAST(:message_ids AS uuid[]), CAST(:attempts AS integer[]),
                CAST(:delays AS bigint[]), CAST(:errors AS text[]))
         AS f(message_id, attempts, delay_ms, error)
    WHERE m.message_id = f.message_id AND m.attempts = f.attempts AND m.state = 'claimed'
    RETURNING m.queue_name
)
SELECT count(*) AS written,
       (SELECT count(pg_notify('broker_wakeup', q.queue_name))
        FROM (SELECT DISTINCT queue_name FROM rescheduled) AS q) AS notified
FROM rescheduled

-- name: requeue
-- Give back claimed messages that never started (shutdown, lost lease, unknown claims):
-- ready now, no retry counted, and not a delivery either (releases + 1).
WITH released AS (
    UPDATE broker_messages m
    SET state = 'ready', worker_id = NULL, claimed_at = NULL, releases = m.releases + 1
    FROM unnest(CAST(:message_ids AS uuid[]), CAST(:attempts AS integer[]))
         AS f(message_id, attempts)
    WHERE m.message_id = f.message_id AND m.attempts = f.attempts AND m.state = 'claimed'
    RETURNING m.queue_name
)
SELECT count(*) AS written,
       (SELECT count(pg_notify('broker_wakeup', q.queue_name))
        FROM (SELECT DISTINCT queue_name FROM released) AS q) AS notified
FROM released

-- name: dead_letter
-- Move failed messages to the dead letters, fenced like ack.
WITH dead AS (
    DELETE FROM broker_messages m
    USING unnest(CAST(:message_ids AS uuid[]), CAST(:attempts AS integer[]),
                 CAST(:errors AS text[]), CAST(:tracebacks AS text[]))
          AS f(message_id, attempts, error, traceback)
    WHERE m.message_id = f.message_id AND m.attempts = f.attempts AND m.state = 'claimed'
    RETURNING m.*, f.error AS dead_error, f.traceback AS dead_traceback
), buried AS (
    INSERT INTO broker_dead_letters (
        message_id, queue_name, actor_name, args, kwargs, options, message_timestamp,
        enqueued_at, attempts, retries, error, traceback)
    SELECT message_id, queue_name, actor_name, args, kwargs, options, message_timestamp,
           enqueued_at, attempts, retries, dead_error, dead_traceback
    FROM dead
    ON CONFLICT (message_id) DO NOTHING
)
SELECT count(*) AS written FROM dead

-- name: release_unknown
-- After a claim whose outcome is unknown (connection lost around its commit): give back this
-- worker's claims on the queue that the consumer does not hold.
WITH released AS (
    UPDATE broker_messages
    SET state = 'ready', worker_id = NULL, claimed_at = NULL, releases = releases + 1
    WHERE state = 'claimed' AND worker_id = :worker_id AND queue_name = :queue_name
      AND NOT (message_id = ANY (CAST(:held AS uuid[])))
    RETURNING queue_name
)
SELECT pg_notify('broker_wakeup', q.queue_name)
FROM (SELECT DISTINCT queue_name FROM released) AS q

-- name: register_worker
INSERT INTO broker_workers (id, hostname, pid, lease_until)
VALUES (:worker_id, :hostname, :pid, clock_timestamp() + :lease_ms * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = clock_timestamp(), lease_until = EXCLUDED.lease_until

-- name: heartbeat
UPDATE broker_workers
SET heartbeat_at = clock_timestamp(),
    lease_until = clock_timestamp() + :lease_ms * interval '1 millisecond'
WHERE id = :worker_id

-- name: unregister_worker
-- A clean shutdown: give back whatever is still claimed, forget the worker.
WITH released AS (
    UPDATE broker_messages
    SET state = 'ready', worker_id = NULL, claimed_at = NULL
    WHERE state = 'claimed' AND worker_id = :worker_id
    RETURNING queue_name
), gone AS (
    DELETE FROM broker_workers WHERE id = :worker_id
)
SELECT pg_notify('broker_wakeup', q.queue_name)
FROM (SELECT DISTINCT queue_name FROM released) AS q

-- name: reap
SELECT broker_reap(:lease_ms) AS released

-- name: pending_count
-- Live messages (ready, delayed or claimed) of a queue, and the database clock, for join().
SELECT (SELECT count(*) FROM broker_messages WHERE queue_name = :queue_name) AS pending,
       clock_timestamp() AS now

-- name: flush
DELETE FROM broker_messages WHERE queue_name = ANY (CAST(:queue_names AS text[]))

-- name: flush_dead_letters
DELETE FROM broker_dead_letters WHERE queue_name = ANY (CAST(:queue_names AS text[]))

-- name: stats
-- Backlog per queue: ready (due now), delayed (due later), claimed (prefetched or running),
-- and dead letters.
WITH live AS (
    SELECT queue_name,
           count(*) FILTER (WHERE state = 'ready' AND due_at <= clock_timestamp()) AS ready,
           count(*) FILTER (WHERE state = 'ready' AND due_at > clock_timestamp()) AS delayed,
           count(*) FILTER (WHERE state = 'claimed') AS claimed,
           min(enqueued_at) FILTER (WHERE state = 'ready' AND due_at <= clock_timestamp())
               AS oldest_ready_at
    FROM broker_messages
    GROUP BY queue_name
), dead AS (
    SELECT queue_name, count(*) AS dead_letters
    FROM broker_dead_letters
    GROUP BY queue_name
)
SELECT coalesce(live.queue_name, dead.queue_name) AS queue_name,
       coalesce(live.ready, 0) AS ready,
       coalesce(live.delayed, 0) AS delayed,
       coalesce(live.claimed, 0) AS claimed,
       coalesce(dead.dead_letters, 0) AS dead_letters,
       extract(epoch FROM clock_timestamp() - live.oldest_ready_at) AS oldest_ready_s
FROM live FULL JOIN dead ON dead.queue_name = live.queue_name
ORDER BY 1

-- name: dead_letters
SELECT message_id, queue_name, actor_name, args, kwargs, options, retries, attempts, error,
       traceback, enqueued_at, failed_at
FROM broker_dead_letters
WHERE CAST(:queue_name AS text) IS NULL OR queue_name = :queue_name
ORDER BY failed_at DESC, message_id
LIMIT :limit

-- name: forget_dead_letters
-- Retention: dead letters older than :max_age_s seconds, at most :limit per call.
WITH doomed AS (
    SELECT message_id FROM broker_dead_letters
    WHERE failed_at < clock_timestamp() - make_interval(secs => :max_age_s)
    LIMIT :limit
)
DELETE FROM broker_dead_letters d USING doomed WHERE d.message_id = doomed.message_id

-- name: has_live_message
-- Is a message for this actor whose args start with :prefix (a JSON array) still live?
SELECT EXISTS (
    SELECT FROM broker_messages
    WHERE actor_name = :actor_name
      AND args ->> 0 IS NOT DISTINCT FROM (CAST(:prefix AS jsonb) ->> 0)
      AND jsonb_path_query_array(
              args, CAST('$[0 to ' || (jsonb_array_length(CAST(:prefix AS jsonb)) - 1) || ']'
                         AS jsonpath))
          = CAST(:prefix AS jsonb)
) AS live
