"""The pluggable job action and how WORKER_ACTION selects it.

An action is `(job: Job, host: str) -> str | Outcome`: it returns a status string
(normally "done") or an Outcome that also carries a command's exit status and output
(recorded in job_runs and returned in the reply), raises TransientJobError for
failures worth retrying and PermanentJobError for failures that must be dead-lettered.
It may run again for the same message (at-least-once delivery), so it must be
idempotent; the worker itself never records a message twice and skips the action for
messages already in job_runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from account_worker.errors import ActionLoadError, PermanentJobError
from account_worker.messages import Job


@dataclass(frozen=True)
class Outcome:
    """A finished action: its status and, for a remote command, exit status and (bounded) output."""

    status: str
    exit_status: int | None = None
    stdout: str | None = None
    stderr: str | None = None


Action = Callable[[Job, str], "str | Outcome"]


def default_action(job: Job, host: str) -> str:
    """Built-in action: the job is resolved to its host; recording the run is the effect."""
    if not host.strip():
        raise PermanentJobError(f"account {job.account_uuid} has an empty host")
    return "done"


def load_action(path: str) -> Action:
    """Import 'package.module:function' (attribute path may be dotted) and return the callable."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ActionLoadError(f"WORKER_ACTION must look like 'package.module:function', got {path!r}")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error
        raise ActionLoadError(f"WORKER_ACTION cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ActionLoadError(f"WORKER_ACTION: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise ActionLoadError(f"WORKER_ACTION: {path!r} is not callable")
    return target
