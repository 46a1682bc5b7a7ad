-- nexus 0011: at most one at-once paid extraction per quiet window, and the provisional merge
-- of what the offline rules found in a deferred version.
--
-- A later urgent version inside the window is deferred like a quiet one; the identity values
-- its rules found (nombre, email, telefono: the row's ``signals``) reach prospect_data at once,
-- without a ledger row, until an extraction of that version (or a newer one) supersedes them.

ALTER TABLE public.nexus_queue
    -- When the row's latest extraction (of any version) started: an urgent version is extracted
    -- at once only if none started within the debounce window.  Not reset by a new version.
    ADD COLUMN extraction_started_at timestamptz,
    -- The version ``signals`` were read from, and when they were stored.
    ADD COLUMN signals_version integer,
    ADD COLUMN signals_at timestamptz;

-- Recompute a visitor's prospect from the merge ledger plus the provisional identity values of
-- the visitor's open (or failed) queue rows, and store it.  The rules of 0007's merge:
--   * Within a session the latest merged version replaces the session's earlier ones.
--   * Objections: the union of each session's latest.
--   * Interest: sessions walked in order of their latest merge; an explicit rejection
--     (data.rechazo) sets it, any other session can only raise it.  momento_optimo follows.
--   * Identity fields (nombre, email, telefono, ocupacion, arquetipo): the newest non-null
--     value, else the one stored (an operator's, through update_prospect_data).  A queue row's
--     ``signals`` read from a version newer than the session's latest ledger entry count as
--     that session's newest nombre / email / telefono (timed at the later of when they were
--     stored and the session's latest merge); interest, objections and momento come from the
--     ledger only.  A completed row's signals never count: its extraction is in the ledger
--     (or was erased with it by the prospect retention, and must not come back).
--   * etapa only moves forward (the rules of update_prospect_data).
-- Creates the prospect row if missing; the row lock serialises every recompute of a visitor.
-- Returns {success, previous_stage, current_stage, advanced}.
CREATE FUNCTION public.nexus_recompute_prospect(p_fingerprint_id text)
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
    IF p_fingerprint_id IS NULL OR length(p_fingerprint_id) = 0 THEN
        RAISE EXCEPTION 'p_fingerprint_id must not be empty' USING ERRCODE = '22023';
    END IF;
    INSERT INTO public.prospect_data (fingerprint_id) VALUES (p_fingerprint_id)
    ON CONFLICT (fingerprint_id) DO NOTHING;
    SELECT * INTO old FROM public.prospect_data WHERE fingerprint_id = p_fingerprint_id FOR UPDATE;

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

    WITH entries AS (
        SELECT m.merged_at AS at, m.version, m.data
          FROM public.prospect_merges m
         WHERE m.fingerprint_id = p_fingerprint_id
        UNION ALL
        SELECT greatest(q.signals_at, last.merged_at), q.signals_version,
               jsonb_build_object('nombre', q.signals -> 'nombre', 'email', q.signals -> 'email',
                                  'telefono', q.signals -> 'telefono')
          FROM public.nexus_queue q
          LEFT JOIN LATERAL (SELECT max(m.version) AS version, max(m.merged_at) AS merged_at
                               FROM public.prospect_merges m
                              WHERE m.queue_id = q.id) AS last ON true
         WHERE q.fingerprint = p_fingerprint_id
           AND q.status IN ('pending', 'processing', 'failed')
           AND jsonb_typeof(q.signals) = 'object' AND q.signals_version IS NOT NULL
           AND q.signals_version > coalesce(last.version, -1)
    )
    SELECT (array_agg(e.data ->> 'nombre' ORDER BY e.at DESC, e.version DESC)
                FILTER (WHERE nullif(e.data ->> 'nombre', '') IS NOT NULL))[1] AS nombre,
           (array_agg(e.data ->> 'email' ORDER BY e.at DESC, e.version DESC)
                FILTER (WHERE nullif(e.data ->> 'email', '') IS NOT NULL))[1] AS email,
           (array_agg(e.data ->> 'telefono' ORDER BY e.at DESC, e.version DESC)
                FILTER (WHERE nullif(e.data ->> 'telefono', '') IS NOT NULL))[1] AS telefono,
           (array_agg(e.data ->> 'ocupacion' ORDER BY e.at DESC, e.version DESC)
                FILTER (WHERE nullif(e.data ->> 'ocupacion', '') IS NOT NULL))[1] AS ocupacion,
           (array_agg(e.data ->> 'arquetipo' ORDER BY e.at DESC, e.version DESC)
                FILTER (WHERE nullif(e.data ->> 'arquetipo', '') IS NOT NULL))[1] AS arquetipo
      INTO ident
      FROM entries e;

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

    RETURN jsonb_build_object('success', true, 'previous_stage', old.etapa,
                              'current_stage', stage, 'advanced', stage <> old.etapa);
END $$;

-- 0007's merge, now recording the version in the ledger and calling the one recompute above.
-- A version already in the ledger is not merged again: {"merged": false}, nothing written.
CREATE OR REPLACE FUNCTION public.nexus_merge_version(
    p_queue_id uuid, p_version integer, p_fingerprint_id text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
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
    SELECT etapa INTO stage FROM public.prospect_data
     WHERE fingerprint_id = p_fingerprint_id FOR UPDATE;

    INSERT INTO public.prospect_merges (queue_id, version, fingerprint_id, data)
    VALUES (p_queue_id, p_version, p_fingerprint_id, p_data)
    ON CONFLICT (queue_id, version) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', true, 'merged', false,
                                  'previous_stage', stage, 'current_stage', stage,
                                  'advanced', false);
    END IF;
    RETURN public.nexus_recompute_prospect(p_fingerprint_id) || '{"merged": true}'::jsonb;
END $$;

REVOKE EXECUTE ON FUNCTION public.nexus_recompute_prospect(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.nexus_recompute_prospect(text) TO nexus_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                           'public.nexus_recompute_prospect(text) FROM %I', r);
        END IF;
    END LOOP;
END $$;
