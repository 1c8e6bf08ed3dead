"""What role_runner reads back of a batch of cases: per host, the play recap's counters, the tasks that
went well, and every failure and unreachable result with its task's name and error message.

A notification callback, next to the default stdout callback (which stays what a person reads): the
recap and the error lines of the default output are not per host enough (an [ERROR] line shared by
several hosts is printed once). Enabled by role_runner only; it writes the JSON file named by
CASE_RESULTS_FILE when the play ends.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: case_results
    type: notification
    short_description: per-host results of role_runner's batches, as JSON
    description:
      - Writes the per-host recap, task names and failures to the file named by CASE_RESULTS_FILE.
    requirements:
      - enabled by tests/unit/role_runner.py
"""


def _native(value: Any) -> Any:
    """JSON-ready: error summaries (dataclasses) as dicts, anything else unknown as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _messages(value: Any) -> list[str]:
    """The messages of an error summary and of the errors it chains, outermost first
    (what the default callback prints as `[ERROR]: Task failed: Action failed: ...`)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key in ("msg", "help_text"):
            if isinstance(value.get(key), str):
                found.append(value[key])
        for key, item in value.items():
            if key not in ("msg", "help_text"):
                found += _messages(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += _messages(item)
    return found


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "case_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hosts: dict[str, dict[str, list[Any]]] = {}

    def _host(self, result: Any) -> dict[str, list[Any]]:
        return self._hosts.setdefault(result.host.get_name(), {"ok": [], "failed": [], "unreachable": []})

    def _record(self, kind: str, result: Any) -> None:
        exception = getattr(result, "exception", None)
        self._host(result)[kind].append(
            {
                "task": result.task.get_name().strip(),
                "error": _messages(json.loads(json.dumps(exception, default=_native))) if exception else [],
                "result": json.loads(json.dumps(result.result, default=_native)),
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._host(result)["ok"].append(result.task.get_name().strip())

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._record("failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record("unreachable", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        report = {
            host: {"recap": stats.summarize(host), **self._hosts.get(host, {"ok": [], "failed": [], "unreachable": []})}
            for host in sorted(set(stats.processed) | set(self._hosts))
        }
        with open(os.environ["CASE_RESULTS_FILE"], "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1, sort_keys=True)
