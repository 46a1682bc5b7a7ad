-- nexus 0004: the role of the internet-facing web process.  Its privileges are granted by the
-- migrations that create what it may call (functions only: no privilege on any table).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nexus_web') THEN
        CREATE ROLE nexus_web NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
END $$;
