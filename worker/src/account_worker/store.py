"""What the worker core needs from the database: the record types and the store protocols.

The core (batch, inflight, job_thread) depends on these; the psycopg adapter (db.py) implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Run(NamedTuple):
    """A finished job to record."""

    message_id: str
    account_uuid: str
    host: str
    status: str
    attempts: int = 1
    exit_status: int | None = None  # a remote command's (ssh action); None for other actions
    stdout: str | None = None
    stderr: str | None = None


class RecordedRun(NamedTuple):
    """What job_runs holds for a message; already_done means an earlier delivery recorded it."""

    message_id: str
    host: str
    status: str
    already_done: bool
    exit_status: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class Store(Protocol):
    """The queries of one batch; each raises DatabaseUnavailable when the database cannot answer."""

    def lookup_hosts(self, account_uuids: Sequence[str]) -> dict[str, str]: ...

    def find_runs(self, message_ids: Sequence[str]) -> dict[str, RecordedRun]: ...

    def record_runs(self, runs: Sequence[Run]) -> list[RecordedRun]: ...


class JobStore(Store, Protocol):
    """The job thread's store: a Store it can also wait for (ping) and release (close); db.Database is PostgreSQL's."""

    def ping(self) -> None: ...

    def close(self) -> None: ...
