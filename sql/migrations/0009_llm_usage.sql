-- nexus 0009: what every Claude call cost, failed calls included, and which extractor
-- produced each stored result and why (a fallback names its reason).

-- Set with ``extractor``: NULL when the configured extractor produced the result, else why
-- another one did, e.g. 'fallback: refusal', 'fallback: budget spent'.
ALTER TABLE public.nexus_queue ADD COLUMN extractor_reason text;

-- One row per HTTP call to the Messages API that got an answer or failed (a timeout, a 429,
-- a refusal ...).  Token counts are what the API reported; 0 when it reported none.
-- ``queue_id`` is not a foreign key: usage outlives the rows it was spent on (the daily
-- cleanup deletes queue rows; the cost of last month must still add up).
CREATE TABLE public.llm_calls (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id                    uuid,
    version                     integer,
    model                       text NOT NULL,
    outcome                     text NOT NULL,   -- ok | refusal | max_tokens | invalid | error | http_NNN
    input_tokens                integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens               integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_creation_input_tokens integer NOT NULL DEFAULT 0 CHECK (cache_creation_input_tokens >= 0),
    cache_read_input_tokens     integer NOT NULL DEFAULT 0 CHECK (cache_read_input_tokens >= 0),
    at                          timestamptz NOT NULL DEFAULT now()
);

-- The daily token budget sums today's rows (UTC) and `nexus cost --since` reads a time range.
CREATE INDEX llm_calls_at_idx ON public.llm_calls (at);
CREATE INDEX llm_calls_queue_idx ON public.llm_calls (queue_id);

REVOKE ALL ON public.llm_calls FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON public.llm_calls TO nexus_worker;
ALTER TABLE public.llm_calls ENABLE ROW LEVEL SECURITY;
CREATE POLICY nexus_worker_all ON public.llm_calls TO nexus_worker USING (true) WITH CHECK (true);

-- On Supabase, default privileges grant anon and authenticated everything on new tables.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON public.llm_calls FROM %I', r);
        END IF;
    END LOOP;
END $$;
