-- seedance-watch's shared store, version 1 (docs/design.md, "The shared store").
--
-- Applied by ledger/postgres/schema.py inside one transaction, under the migration
-- advisory lock, after the schema "seedance_watch" and its table
-- schema_migrations exist; the runner records the version itself.  Never edit
-- a migration that has shipped: add the next file (0002_...sql) instead.

-- Every host that ever opened the store: its lease, measured by the database's
-- clock (now()), and the record its daemon keeps of itself (daemon.json's
-- document: pid, key_source, paused, updated_at).
CREATE TABLE seedance_watch.hosts (
    name          text PRIMARY KEY,
    -- Raised each time a daemon opens the store under this name (and, for the
    -- adoption of a dead host, by the host adopting it): the fencing token of a session.
    epoch         bigint NOT NULL DEFAULT 0,
    pid           integer,
    machine       text,                        -- socket.gethostname() of the daemon
    lease_seconds double precision NOT NULL DEFAULT 30,
    started_at    timestamptz NOT NULL DEFAULT now(),
    renewed_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,                 -- a clean close; NULL while it runs
    daemon        json,
    daemon_updated_at timestamptz
);

-- A global order of writes: which record is newer, and a cursor for "what changed".
CREATE SEQUENCE seedance_watch.job_revisions;

-- Every job's latest record (core/jobs.Job.to_dict, as json: kept verbatim, so it
-- holds whatever the JSON-lines ledger holds, \u0000 included), and the columns
-- the queries need, copied from it by the store on every write.
CREATE TABLE seedance_watch.jobs (
    job_id       text PRIMARY KEY,
    record       json NOT NULL,
    state        text NOT NULL,
    kind         text NOT NULL,
    content_key  text,
    -- The host whose daemon drives the job, and the epoch of the session that
    -- last wrote it: a write is fenced on both.
    owner        text NOT NULL REFERENCES seedance_watch.hosts (name),
    owner_epoch  bigint NOT NULL,
    created_at   double precision NOT NULL,   -- the job's own times (Unix seconds)
    updated_at   double precision NOT NULL,
    seq          integer NOT NULL,
    intent_at    double precision,
    -- When the submit started counting against the budget (core/budget.submit_time)
    -- and its recorded cost in cents (NULL: priced from the model at read time).
    submit_at    double precision,
    cost_cents   bigint,
    revision     bigint NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()   -- the database's clock
);

-- A host's unfinished jobs (start-up, adoption) and the tasks in flight.
CREATE INDEX jobs_active ON seedance_watch.jobs (owner, state)
    WHERE state NOT IN ('done', 'failed');
-- Dedupe across hosts: the newest DONE job of a request.
CREATE INDEX jobs_done_by_content_key ON seedance_watch.jobs (content_key, updated_at, revision)
    WHERE state = 'done' AND content_key IS NOT NULL;
-- The day's tally: the submits that count, by when they started counting.
CREATE INDEX jobs_submits ON seedance_watch.jobs (submit_at) WHERE submit_at IS NOT NULL;
CREATE INDEX jobs_by_owner ON seedance_watch.jobs (owner);

-- The files of a drop, claimed by the job made of them, so that a drop several
-- hosts see becomes one job (docs/design.md, "The shared store"): a file is its
-- path relative to the inbox, its size, its mtime and its sha256.
CREATE TABLE seedance_watch.claims (
    path        text NOT NULL,
    size        bigint NOT NULL,
    mtime_ns    bigint NOT NULL,
    sha256      text NOT NULL,
    job_id      text NOT NULL REFERENCES seedance_watch.jobs (job_id),
    host        text NOT NULL REFERENCES seedance_watch.hosts (name),
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (path, size, mtime_ns, sha256)
);
CREATE INDEX claims_by_job ON seedance_watch.claims (job_id);
