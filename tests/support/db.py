"""The worker's job_runs table: what was recorded for the message ids of one run (a prefix)."""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import psycopg


class Recorded(NamedTuple):
    distinct: int  # message ids
    rows: int  # rows; more than distinct means a job was recorded twice

    @property
    def duplicates(self) -> int:
        return self.rows - self.distinct


def count_rows(db: psycopg.Connection, prefix: str) -> int:
    """Rows of job_runs whose message_id starts with prefix (one cheap query on an open connection)."""
    row = db.execute("SELECT count(*) FROM job_runs WHERE message_id LIKE %s", (prefix + "%",)).fetchone()
    return int(row[0]) if row else 0


def has_row(db: psycopg.Connection, message_id: str) -> bool:
    """Whether job_runs holds this message id (one primary-key look-up)."""
    row = db.execute("SELECT EXISTS (SELECT 1 FROM job_runs WHERE message_id = %s)", (message_id,)).fetchone()
    return bool(row and row[0])


def has_prefix(db: psycopg.Connection, prefix: str) -> bool:
    """Whether job_runs holds any message id starting with prefix (stops at the first)."""
    row = db.execute("SELECT EXISTS (SELECT 1 FROM job_runs WHERE message_id LIKE %s)", (prefix + "%",)).fetchone()
    return bool(row and row[0])


def recorded(database_url: str, prefix: str) -> Recorded:
    """(distinct message ids, rows) recorded in job_runs for ids starting with prefix."""
    with psycopg.connect(database_url, connect_timeout=5) as db:
        row = db.execute(
            "SELECT count(DISTINCT message_id), count(*) FROM job_runs WHERE message_id LIKE %s", (prefix + "%",)
        ).fetchone()
    return Recorded(int(row[0]), int(row[1])) if row else Recorded(0, 0)


def recorded_ids(database_url: str, prefix: str) -> set[str]:
    """The distinct message ids recorded in job_runs that start with prefix."""
    with psycopg.connect(database_url, connect_timeout=5) as db:
        rows = db.execute(
            "SELECT DISTINCT message_id FROM job_runs WHERE message_id LIKE %s", (prefix + "%",)
        ).fetchall()
    return {str(row[0]) for row in rows}


def wait_recorded(database_url: str, prefix: str, expected: int, deadline_s: float, poll_s: float = 0.5) -> Recorded:
    """Poll until `expected` distinct ids are recorded or the deadline passes; the last count.

    A new connection per poll, so the database may be restarted meanwhile; while it is
    unreachable the last count stands."""
    deadline = time.monotonic() + deadline_s
    last = Recorded(0, 0)
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):
            last = recorded(database_url, prefix)
        if last.distinct >= expected:
            return last
        time.sleep(poll_s)
    return last


def delete_rows(db: psycopg.Connection, prefix: str) -> None:
    """Delete the rows of one run (an autocommit connection, or commit after)."""
    db.execute("DELETE FROM job_runs WHERE message_id LIKE %s", (prefix + "%",))
