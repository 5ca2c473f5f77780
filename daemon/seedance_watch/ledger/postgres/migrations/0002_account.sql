-- seedance-watch's shared store, version 2: several hosts as one account
-- (docs/design.md, "Several hosts, one account").
--
-- Applied by ledger/postgres/schema.py as version 1 was.  Never edit a migration
-- that has shipped: add the next file instead.

-- One row, locked by every submit decision of every host (SELECT ... FOR UPDATE):
-- the decision counts the tasks in flight and the day's spend, and writes the
-- intent, while no other host decides.  It also holds the account's token bucket
-- (gateway.requests_per_minute across the hosts), refilled by the database's clock.
CREATE TABLE seedance_watch.account (
    id         integer PRIMARY KEY CHECK (id = 1),
    tokens     double precision,                       -- NULL: full (never used)
    tokens_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO seedance_watch.account (id) VALUES (1);

-- The tasks in flight across the hosts: what a submit decision counts.
CREATE INDEX jobs_in_flight ON seedance_watch.jobs (state)
    WHERE state IN ('submitting', 'submitted');

-- A slot frees (a job leaves submitting or submitted, whichever host wrote it): the
-- hosts waiting for one LISTEN on seedance_watch_slots.  Sent at commit; repeated
-- notifications of one transaction are folded into one.
CREATE FUNCTION seedance_watch.slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('seedance_watch_slots', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER slot_freed AFTER UPDATE OF state ON seedance_watch.jobs
    FOR EACH ROW
    WHEN (OLD.state IN ('submitting', 'submitted')
          AND NEW.state NOT IN ('submitting', 'submitted'))
    EXECUTE FUNCTION seedance_watch.slot_freed();

-- `seedance-watch retry` on any host: which failed job sent which file back to the
-- inbox (its inbox path, size and recorded hash), written before the files move
-- (ledger/retries.py keeps the same in state/retries.jsonl for one host).
CREATE TABLE seedance_watch.retry_requests (
    id            bigserial PRIMARY KEY,
    job_id        text NOT NULL,
    path          text NOT NULL,
    size          bigint NOT NULL,
    sha256        text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retry_requests_by_path ON seedance_watch.retry_requests (path);
CREATE INDEX retry_requests_by_job ON seedance_watch.retry_requests (job_id);
