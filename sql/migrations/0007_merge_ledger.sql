-- nexus 0007: the merge ledger, the per-session merge, and what the debounce and the
-- assistant-only skip need on the queue row.

-- What the worker keeps about a row's versions (all nullable: an INSERT naming only the seed's
-- columns still works).
ALTER TABLE public.nexus_queue
    -- The version whose extraction ``result`` holds (a version completed with the previous
    -- result, because it added no visitor text, leaves it unchanged).
    ADD COLUMN result_version integer,
    -- nexus_visitor_hash() of that version's messages: a newer version with the same hash
    -- added assistant messages only and is not extracted again.
    ADD COLUMN visitor_hash text,
    -- What the offline rules found that sales acts on, in the latest version the worker
    -- looked at: a version finding something new there is extracted at once.
    ADD COLUMN signals jsonb,
    -- The version waiting for the conversation to go quiet, and when it is due (database
    -- clock).  Its broker message is delayed until then.
    ADD COLUMN deferred_version integer,
    ADD COLUMN due_at timestamptz;

-- Every merged version of every session: each processed version merges at most once (the
-- UNIQUE constraint, whatever the caller does), and the prospect is recomputed from it.  No
-- foreign key to nexus_queue: the history outlives the retention of queue rows; it is erased
-- with its prospect.
CREATE TABLE public.prospect_merges (
    queue_id        uuid NOT NULL,
    version         integer NOT NULL,
    fingerprint_id  text NOT NULL,
    merged_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    data            jsonb NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    CONSTRAINT prospect_merges_queue_version_key UNIQUE (queue_id, version)
);

CREATE INDEX prospect_merges_fingerprint_idx ON public.prospect_merges (fingerprint_id);

-- The history of prospects merged before the ledger existed cannot be split by session: each
-- one becomes a single baseline session (version 0 of a queue id derived from the
-- fingerprint), so recomputing reproduces it exactly until new sessions arrive.
INSERT INTO public.prospect_merges (queue_id, version, fingerprint_id, merged_at, data)
SELECT md5('nexus-baseline:' || p.fingerprint_id)::uuid, 0, p.fingerprint_id, p.updated_at,
       jsonb_build_object(
           'nombre', p.nombre, 'email', p.email, 'telefono', p.telefono,
           'ocupacion', p.ocupacion, 'nivel_interes', p.nivel_interes,
           'objeciones', to_jsonb(p.objeciones), 'arquetipo', p.arquetipo,
           'momento_optimo', p.momento_optimo, 'rechazo', false, 'baseline', true)
  FROM public.prospect_data p;

-- A hash of the visitor's (role "user") message texts, in order.
CREATE FUNCTION public.nexus_visitor_hash(p_messages jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
    SELECT md5(coalesce(jsonb_agg(e -> 'content' ORDER BY i), '[]'::jsonb)::text)
      FROM jsonb_array_elements(
               CASE WHEN jsonb_typeof(p_messages) = 'array' THEN p_messages ELSE '[]' END)
           WITH ORDINALITY AS t(e, i)
     WHERE e ->> 'role' = 'user' AND jsonb_typeof(e -> 'content') = 'string';
$$;

-- Merge one processed version of one session (queue row) into the visitor's prospect: record
-- it in the ledger, then recompute the prospect from the ledger.
--   * Within a session the latest merged version replaces the session's earlier ones.
--   * Objections: the union of each session's latest.
--   * Interest: sessions walked in order of their latest merge; an explicit rejection
--     (data.rechazo) sets it, any other session can only raise it -- a bare greeting in a new
--     session never lowers a hot lead.  momento_optimo follows from it (SPEC 6).
--   * Identity fields (nombre, email, telefono, ocupacion, arquetipo): the most recently
--     merged non-null value in the ledger, else the one stored (an operator's, through
--     update_prospect_data).
--   * etapa only moves forward (the rules of update_prospect_data).
-- A version already in the ledger is not merged again: {"merged": false}, nothing written.
CREATE FUNCTION public.nexus_merge_version(
    p_queue_id uuid, p_version integer, p_fingerprint_id text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old public.prospect_data%ROWTYPE;
    merged public.prospect_data%ROWTYPE;
    ident record;
    s record;
    session_interest numeric;
    interest numeric;
    objections text[] := '{}';
    stage text;
BEGIN
    IF p_queue_id IS NULL OR p_version IS NULL THEN
        RAISE EXCEPTION 'p_queue_id and p_version must not be null' USING ERRCODE = '22023';
    END IF;
    IF p_fingerprint_id IS NULL OR length(p_fingerprint_id) = 0 THEN
        RAISE EXCEPTION 'p_fingerprint_id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'p_data must be a JSON object' USING ERRCODE = '22023';
    END IF;

    -- The prospect's row lock serialises merges of one visitor; the statements after it see
    -- every ledger row committed before it was granted.
    INSERT INTO public.prospect_data (fingerprint_id) VALUES (p_fingerprint_id)
    ON CONFLICT (fingerprint_id) DO NOTHING;
    SELECT * INTO old FROM public.prospect_data WHERE fingerprint_id = p_fingerprint_id FOR UPDATE;

    INSERT INTO public.prospect_merges (queue_id, version, fingerprint_id, data)
    VALUES (p_queue_id, p_version, p_fingerprint_id, p_data)
    ON CONFLICT (queue_id, version) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', true, 'merged', false,
                                  'previous_stage', old.etapa, 'current_stage', old.etapa,
                                  'advanced', false);
    END IF;

    FOR s IN
        SELECT latest.data
          FROM (SELECT DISTINCT ON (m.queue_id) m.queue_id, m.data,
                       max(m.merged_at) OVER (PARTITION BY m.queue_id) AS last_merge
                  FROM public.prospect_merges m
                 WHERE m.fingerprint_id = p_fingerprint_id
                 ORDER BY m.queue_id, m.version DESC) AS latest
         ORDER BY latest.last_merge, latest.queue_id
    LOOP
        session_interest := (s.data ->> 'nivel_interes')::numeric;
        IF session_interest IS NOT NULL THEN
            IF interest IS NULL OR s.data -> 'rechazo' = 'true'::jsonb THEN
                interest := session_interest;
            ELSE
                interest := greatest(interest, session_interest);
            END IF;
        END IF;
        IF jsonb_typeof(s.data -> 'objeciones') = 'array' THEN
            objections := objections
                || ARRAY(SELECT jsonb_array_elements_text(s.data -> 'objeciones'));
        END IF;
    END LOOP;

    SELECT (array_agg(m.data ->> 'nombre' ORDER BY m.merged_at DESC, m.version DESC)
                FILTER (WHERE nullif(m.data ->> 'nombre', '') IS NOT NULL))[1] AS nombre,
           (array_agg(m.data ->> 'email' ORDER BY m.merged_at DESC, m.version DESC)
                FILTER (WHERE nullif(m.data ->> 'email', '') IS NOT NULL))[1] AS email,
           (array_agg(m.data ->> 'telefono' ORDER BY m.merged_at DESC, m.version DESC)
                FILTER (WHERE nullif(m.data ->> 'telefono', '') IS NOT NULL))[1] AS telefono,
           (array_agg(m.data ->> 'ocupacion' ORDER BY m.merged_at DESC, m.version DESC)
                FILTER (WHERE nullif(m.data ->> 'ocupacion', '') IS NOT NULL))[1] AS ocupacion,
           (array_agg(m.data ->> 'arquetipo' ORDER BY m.merged_at DESC, m.version DESC)
                FILTER (WHERE nullif(m.data ->> 'arquetipo', '') IS NOT NULL))[1] AS arquetipo
      INTO ident
      FROM public.prospect_merges m
     WHERE m.fingerprint_id = p_fingerprint_id;

    merged := old;
    merged.nombre := coalesce(ident.nombre, old.nombre);
    merged.email := coalesce(ident.email, old.email);
    merged.telefono := coalesce(ident.telefono, old.telefono);
    merged.ocupacion := coalesce(ident.ocupacion, old.ocupacion);
    merged.arquetipo := coalesce(ident.arquetipo, old.arquetipo);
    IF interest IS NOT NULL THEN
        merged.nivel_interes := interest;
        merged.momento_optimo := CASE WHEN interest >= 7 THEN 'caliente'
                                      WHEN interest >= 4 THEN 'tibio'
                                      ELSE 'frio' END;
    END IF;
    -- Unknown values are kept, so the table's CHECK rejects them (nothing is written).
    merged.objeciones := ARRAY(
        SELECT x FROM unnest(objections) WITH ORDINALITY AS t(x, i)
         GROUP BY x
         ORDER BY coalesce(array_position(ARRAY['precio', 'tiempo', 'confianza', 'mlm'], x), 5),
                  min(i));

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

    RETURN jsonb_build_object('success', true, 'merged', true, 'previous_stage', old.etapa,
                              'current_stage', stage, 'advanced', stage <> old.etapa);
END $$;

REVOKE EXECUTE ON FUNCTION public.nexus_visitor_hash(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.nexus_merge_version(uuid, integer, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.nexus_visitor_hash(jsonb) TO nexus_worker;
GRANT EXECUTE ON FUNCTION public.nexus_merge_version(uuid, integer, text, jsonb) TO nexus_worker;

REVOKE ALL ON public.prospect_merges FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON public.prospect_merges TO nexus_worker;
ALTER TABLE public.prospect_merges ENABLE ROW LEVEL SECURITY;
CREATE POLICY nexus_worker_all ON public.prospect_merges TO nexus_worker
    USING (true) WITH CHECK (true);

-- Supabase grants its API roles everything by default: not on these.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON public.prospect_merges FROM %I', r);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION public.nexus_visitor_hash(jsonb) FROM %I', r);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                           'public.nexus_merge_version(uuid, integer, text, jsonb) FROM %I', r);
        END IF;
    END LOOP;
END $$;
