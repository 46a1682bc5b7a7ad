-- nexus 0001: the seed's objects -- nexus_queue, prospect_data and their functions -- with
-- sound semantics, roles and row-level security.  Runs on PostgreSQL 15 and 16.

-- Roles are cluster-wide: create them only when missing (several databases share a server).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nexus_producer') THEN
        CREATE ROLE nexus_producer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nexus_worker') THEN
        CREATE ROLE nexus_worker NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- One row per chat session.  ``version`` counts the conversation's versions: a changed resend
-- bumps it, and every version gets exactly one broker message (see the dispatch trigger).
CREATE TABLE public.nexus_queue (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    messages        jsonb NOT NULL CHECK (jsonb_typeof(messages) = 'array'),
    fingerprint     text,
    session_id      text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    error_message   text,
    retry_count     integer NOT NULL DEFAULT 0,   -- failed attempts of the current version
    version         integer NOT NULL DEFAULT 1,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),  -- when the current version arrived
    started_at      timestamptz,                  -- when the current attempt claimed the row
    updated_at      timestamptz NOT NULL DEFAULT now(),
    extractor       text,                         -- rules | claude, of the stored result
    result          jsonb,                        -- the normalised extraction
    usage           jsonb                         -- LLM token usage of the stored result
);

CREATE INDEX nexus_queue_status_idx ON public.nexus_queue (status);
CREATE INDEX nexus_queue_created_at_idx ON public.nexus_queue (created_at);
CREATE INDEX nexus_queue_fingerprint_idx ON public.nexus_queue (fingerprint);
CREATE INDEX nexus_queue_open_idx ON public.nexus_queue (updated_at)
    WHERE status IN ('pending', 'processing');

CREATE TABLE public.prospect_data (
    fingerprint_id  text PRIMARY KEY,
    nombre          text,
    email           text,
    telefono        text,
    ocupacion       text,
    nivel_interes   numeric(3, 1)
                    CHECK (nivel_interes BETWEEN 0 AND 10 AND nivel_interes * 2 = trunc(nivel_interes * 2)),
    objeciones      text[] NOT NULL DEFAULT '{}'
                    CHECK (objeciones <@ ARRAY['precio', 'tiempo', 'confianza', 'mlm']),
    arquetipo       text CHECK (arquetipo IN (
                        'emprendedor_dueno_negocio', 'profesional_vision', 'lider_hogar',
                        'joven_ambicion', 'independiente_freelancer', 'lider_comunidad')),
    momento_optimo  text CHECK (momento_optimo IN ('caliente', 'tibio', 'frio')),
    etapa           text NOT NULL DEFAULT 'iniciar' CHECK (etapa IN ('iniciar', 'acoger', 'activar')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The idempotent upsert behind both enqueue paths.  Returns the row id, the version to process
-- and whether the call was a duplicate (identical resend, or a strict prefix of what is stored:
-- a late, older request).  A changed conversation re-opens the row as a new version.
CREATE FUNCTION public.nexus_enqueue(
    p_messages jsonb, p_session_id text, p_fingerprint text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    OUT queue_id uuid, OUT queue_version integer, OUT duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
-- A producer never waits long on a row lock: it answers 503 and the widget retries.
SET lock_timeout = '2s' AS $$
DECLARE
    cur public.nexus_queue%ROWTYPE;
    new_len integer;
BEGIN
    IF p_messages IS NULL OR jsonb_typeof(p_messages) <> 'array' OR jsonb_array_length(p_messages) = 0 THEN
        RAISE EXCEPTION 'p_messages must be a non-empty JSON array' USING ERRCODE = '22023';
    END IF;
    IF p_session_id IS NULL OR length(p_session_id) = 0 THEN
        RAISE EXCEPTION 'p_session_id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN
        p_metadata := '{}'::jsonb;
    END IF;
    new_len := jsonb_array_length(p_messages);
    LOOP
        SELECT * INTO cur FROM public.nexus_queue WHERE session_id = p_session_id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO public.nexus_queue (messages, session_id, fingerprint, metadata)
            VALUES (p_messages, p_session_id, p_fingerprint, p_metadata)
            ON CONFLICT (session_id) DO NOTHING
            RETURNING id, version INTO queue_id, queue_version;
            IF FOUND THEN
                duplicate := false;
                RETURN;
            END IF;
            CONTINUE;  -- a concurrent call inserted it first: lock that row and compare
        END IF;

        queue_id := cur.id;
        duplicate := true;
        queue_version := cur.version;
        -- A resend without a fingerprint keeps the stored one (it is not new information).
        p_fingerprint := coalesce(p_fingerprint, cur.fingerprint);
        IF cur.messages = p_messages AND cur.fingerprint IS NOT DISTINCT FROM p_fingerprint THEN
            RETURN;
        END IF;
        -- A strict prefix of the stored conversation is a late, older request: never a
        -- replacement, whatever fingerprint it carries.
        IF new_len < jsonb_array_length(cur.messages)
           AND p_messages = (SELECT jsonb_agg(e ORDER BY i)
                             FROM jsonb_array_elements(cur.messages) WITH ORDINALITY AS t(e, i)
                             WHERE i <= new_len) THEN
            RETURN;
        END IF;

        UPDATE public.nexus_queue
           SET messages = p_messages,
               fingerprint = p_fingerprint,
               metadata = p_metadata,
               status = 'pending',
               retry_count = 0,
               error_message = NULL,
               processed_at = NULL,
               started_at = NULL,
               version = version + 1,
               enqueued_at = now(),
               updated_at = now()
         WHERE id = cur.id
        RETURNING version INTO queue_version;
        duplicate := false;
        RETURN;
    END LOOP;
END $$;

-- The seed's RPC, kept with its signature: returns the row id.
CREATE FUNCTION public.enqueue_nexus_message(
    p_messages jsonb, p_session_id text, p_fingerprint text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb)
RETURNS uuid
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT queue_id FROM public.nexus_enqueue(p_messages, p_session_id, p_fingerprint, p_metadata);
$$;

-- For operators.  Setting a row back to 'pending' re-opens it as a new version, so it is
-- dispatched again; the worker's own transitions are fenced by version and never use this.
CREATE FUNCTION public.update_queue_status(
    p_queue_id uuid, p_status text, p_error_message text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('pending', 'processing', 'completed', 'failed') THEN
        RAISE EXCEPTION 'invalid status %', p_status USING ERRCODE = '22023';
    END IF;
    UPDATE public.nexus_queue
       SET status = p_status,
           error_message = p_error_message,
           processed_at = CASE WHEN p_status IN ('completed', 'failed') THEN now() END,
           version = CASE WHEN p_status = 'pending' THEN version + 1 ELSE version END,
           retry_count = CASE WHEN p_status = 'pending' THEN 0 ELSE retry_count END,
           enqueued_at = CASE WHEN p_status = 'pending' THEN now() ELSE enqueued_at END,
           updated_at = now()
     WHERE id = p_queue_id;
    RETURN FOUND;
END $$;

-- Merge one extraction into the visitor's prospect: a new non-null scalar wins, null keeps the
-- old value, objections are unioned; the funnel stage only moves forward.
CREATE FUNCTION public.update_prospect_data(p_fingerprint_id text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old public.prospect_data%ROWTYPE;
    merged public.prospect_data%ROWTYPE;
    new_objections text[];
    previous text;
    stage text;
BEGIN
    IF p_fingerprint_id IS NULL OR length(p_fingerprint_id) = 0 THEN
        RAISE EXCEPTION 'p_fingerprint_id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'p_data must be a JSON object' USING ERRCODE = '22023';
    END IF;

    INSERT INTO public.prospect_data (fingerprint_id) VALUES (p_fingerprint_id)
    ON CONFLICT (fingerprint_id) DO NOTHING;
    SELECT * INTO old FROM public.prospect_data WHERE fingerprint_id = p_fingerprint_id FOR UPDATE;

    IF jsonb_typeof(p_data -> 'objeciones') = 'array' THEN
        SELECT coalesce(array_agg(x), '{}') INTO new_objections
          FROM jsonb_array_elements_text(p_data -> 'objeciones') AS t(x);
    ELSE
        new_objections := '{}';
    END IF;

    merged := old;
    merged.nombre := coalesce(nullif(p_data ->> 'nombre', ''), old.nombre);
    merged.email := coalesce(nullif(p_data ->> 'email', ''), old.email);
    merged.telefono := coalesce(nullif(p_data ->> 'telefono', ''), old.telefono);
    merged.ocupacion := coalesce(nullif(p_data ->> 'ocupacion', ''), old.ocupacion);
    merged.nivel_interes := coalesce((p_data ->> 'nivel_interes')::numeric, old.nivel_interes);
    merged.arquetipo := coalesce(nullif(p_data ->> 'arquetipo', ''), old.arquetipo);
    merged.momento_optimo := coalesce(nullif(p_data ->> 'momento_optimo', ''), old.momento_optimo);
    merged.objeciones := ARRAY(
        SELECT x FROM unnest(old.objeciones || new_objections) WITH ORDINALITY AS t(x, i)
        GROUP BY x ORDER BY min(i));

    previous := old.etapa;
    stage := old.etapa;
    IF stage = 'iniciar' AND merged.nombre IS NOT NULL AND merged.arquetipo IS NOT NULL
       AND coalesce(merged.nivel_interes, 0) >= 4 THEN
        stage := 'acoger';
    END IF;
    IF stage = 'acoger' AND merged.telefono IS NOT NULL AND coalesce(merged.nivel_interes, 0) >= 7 THEN
        stage := 'activar';
    END IF;

    UPDATE public.prospect_data
       SET nombre = merged.nombre, email = merged.email, telefono = merged.telefono,
           ocupacion = merged.ocupacion, nivel_interes = merged.nivel_interes,
           objeciones = merged.objeciones, arquetipo = merged.arquetipo,
           momento_optimo = merged.momento_optimo, etapa = stage, updated_at = now()
     WHERE fingerprint_id = p_fingerprint_id;

    RETURN jsonb_build_object('success', true, 'previous_stage', previous,
                              'current_stage', stage, 'advanced', stage <> previous);
END $$;

-- Retention: completed rows processed more than 7 days ago, failed rows created more than 30
-- days ago.  The batched form deletes at most p_limit rows so a periodic caller can commit
-- between batches; the seed's no-argument form deletes everything eligible at once.
CREATE FUNCTION public.cleanup_old_nexus_queue(p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    WITH doomed AS (
        SELECT id FROM public.nexus_queue
         WHERE (status = 'completed' AND processed_at < now() - interval '7 days')
            OR (status = 'failed' AND created_at < now() - interval '30 days')
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED)
    DELETE FROM public.nexus_queue q USING doomed WHERE q.id = doomed.id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;

CREATE FUNCTION public.cleanup_old_nexus_queue()
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT public.cleanup_old_nexus_queue(NULL::integer);
$$;

-- Dispatch to the workers is attached by a later migration: a trigger on nexus_queue that
-- writes one broker message per new version, in the same transaction as the row.

-- Security: nothing is callable by PUBLIC; the producer may only enqueue.
REVOKE EXECUTE ON FUNCTION public.nexus_enqueue(jsonb, text, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.enqueue_nexus_message(jsonb, text, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.update_queue_status(uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.update_prospect_data(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.cleanup_old_nexus_queue(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.cleanup_old_nexus_queue() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION public.enqueue_nexus_message(jsonb, text, text, jsonb) TO nexus_producer;
GRANT EXECUTE ON FUNCTION public.enqueue_nexus_message(jsonb, text, text, jsonb) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.nexus_enqueue(jsonb, text, text, jsonb) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.update_queue_status(uuid, text, text) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.update_prospect_data(text, jsonb) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.cleanup_old_nexus_queue(integer) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.cleanup_old_nexus_queue() TO nexus_worker;

REVOKE ALL ON public.nexus_queue, public.prospect_data FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.nexus_queue, public.prospect_data TO nexus_worker;

ALTER TABLE public.nexus_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.prospect_data ENABLE ROW LEVEL SECURITY;
CREATE POLICY nexus_worker_all ON public.nexus_queue TO nexus_worker USING (true) WITH CHECK (true);
CREATE POLICY nexus_worker_all ON public.prospect_data TO nexus_worker USING (true) WITH CHECK (true);
