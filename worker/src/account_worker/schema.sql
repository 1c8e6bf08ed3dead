-- account-worker tables: the single source of truth (shipped as package data).
CREATE TABLE IF NOT EXISTS accounts (
    id bigserial PRIMARY KEY,
    account_uuid text NOT NULL UNIQUE,
    host text NOT NULL
);

CREATE TABLE IF NOT EXISTS job_runs (
    id bigserial PRIMARY KEY,
    message_id text NOT NULL UNIQUE,
    account_uuid text NOT NULL,
    host text NOT NULL,
    status text NOT NULL,
    attempts int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Added with the ssh action: a remote command's exit status and bounded output.
-- Applied to a database made by an earlier version too (idempotent).
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS exit_status int;
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS stdout text;
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS stderr text;
