"""The worker's schema.sql upgrades a database made by the schema before the ssh action, idempotently.

Run in a scratch PostgreSQL schema of the scenario's real database (dropped after).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from account_worker.db import schema_sql
from deployment import Env

# job_runs as the schema created it before the ssh action (exit status and output).
SCHEMA_BEFORE_SSH = """
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
"""


@pytest.fixture
def scratch(env: Env) -> Iterator[psycopg.Connection]:
    name = f"it_upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(env.database_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {name}")
        db.execute(f"SET search_path TO {name}")
        try:
            yield db
        finally:
            db.execute(f"DROP SCHEMA {name} CASCADE")


def _columns(db: psycopg.Connection) -> set[str]:
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'job_runs'"
    ).fetchall()
    return {row[0] for row in rows}


def test_schema_sql_upgrades_yesterdays_job_runs_and_keeps_its_rows(scratch: psycopg.Connection) -> None:
    scratch.execute(SCHEMA_BEFORE_SSH)
    scratch.execute("INSERT INTO job_runs (message_id, account_uuid, host, status) VALUES ('old', 'u', 'h', 'done')")
    assert not {"exit_status", "stdout", "stderr"} & _columns(scratch)
    for _ in range(2):  # applied twice: the second time changes nothing and does not fail
        scratch.execute(schema_sql())
        assert {"exit_status", "stdout", "stderr"} <= _columns(scratch)
    row = scratch.execute("SELECT status, exit_status, stdout FROM job_runs WHERE message_id = 'old'").fetchone()
    assert row == ("done", None, None)
    scratch.execute(
        "INSERT INTO job_runs (message_id, account_uuid, host, status, exit_status, stdout, stderr)"
        " VALUES ('new', 'u', 'h', 'done', 0, 'up', '')"
    )
    assert scratch.execute("SELECT count(*) FROM job_runs").fetchone() == (2,)
