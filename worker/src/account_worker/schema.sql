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
