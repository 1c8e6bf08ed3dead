"""Exception types shared by the worker modules."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """The environment does not describe a usable configuration."""


class ActionLoadError(ConfigError):
    """WORKER_ACTION does not name a callable."""


class InvalidMessage(WorkerError):
    """A delivery cannot be turned into a job; it must be dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownAccount(WorkerError):
    """No row in accounts for the job's account_uuid."""

    def __init__(self, account_uuid: str) -> None:
        super().__init__(f"unknown account {account_uuid}")
        self.account_uuid = account_uuid


class BadApiKey(WorkerError):
    """The message apikey does not match WORKER_APIKEY."""

    def __init__(self) -> None:
        super().__init__("apikey mismatch")


class TransientJobError(WorkerError):
    """The action failed in a way worth retrying later."""


class PermanentJobError(WorkerError):
    """The action failed in a way no retry can fix."""


class DatabaseUnavailable(WorkerError):
    """PostgreSQL cannot be reached; infrastructure, never the message's fault."""


class RecordRejected(WorkerError):
    """The database refused a message's values (a data or integrity error): the message's fault, not an outage."""


class JobThreadCrashed(RuntimeError):
    """The job thread hit a bug; the process exits non-zero and runit restarts it."""
