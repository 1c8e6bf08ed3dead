"""The upgrade guard's decision: may the installed RabbitMQ become the candidate in place?

`rabbitmq_upgrade_plan(installed, candidate, paths)` takes Debian package versions
("3.10.8-1.1", "1:4.0.5-3") and the role's table of in-place series steps
(vars/main.yml `_rabbitmq_upgrade_paths`: series -> {to: next series, from_min: lowest
version of the series that may take that step}) and returns a dict:

- action: "install" (nothing installed), "none" (same version), "patch" (newer, same
  series), "upgrade" (the next series, allowed by the table), "downgrade" or
  "unsupported" (refused);
- installed_series, candidate_series;
- message: one sentence for the operator (the refusals name playbooks/migrate.yml).
"""

from __future__ import annotations

import re
from typing import Any

MIGRATE = "playbooks/migrate.yml"
_UPSTREAM = re.compile(r"^(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a Debian package version; ValueError when it has none."""
    match = _UPSTREAM.match(version.strip())
    if not match:
        raise ValueError(f"not a RabbitMQ version: {version!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _series(version: tuple[int, int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _path(start: str, goal: str, paths: dict[str, Any]) -> list[str]:
    """The series RabbitMQ's one-step-at-a-time path goes through from start to goal ([] if none)."""
    steps, current = [start], start
    while current != goal and current in paths and len(steps) < 50:
        current = str(paths[current]["to"])
        steps.append(current)
    return steps if current == goal else []


def rabbitmq_upgrade_plan(installed: str, candidate: str, paths: dict[str, Any]) -> dict[str, Any]:
    new = parse_version(candidate)
    plan: dict[str, Any] = {"candidate_series": _series(new), "installed_series": ""}
    if not installed.strip():
        return {**plan, "action": "install", "message": f"RabbitMQ {candidate} will be installed."}
    old = parse_version(installed)
    plan["installed_series"] = _series(old)
    if new == old:
        return {**plan, "action": "none", "message": f"RabbitMQ {installed} is installed, nothing to upgrade."}
    if new < old:
        return {
            **plan,
            "action": "downgrade",
            "message": (
                f"RabbitMQ {installed} is installed and apt offers the older {candidate}: RabbitMQ never "
                f"downgrades in place (its data and feature flags are newer than the old version reads); "
                f"keep the pin at {_series(old)} or move to a new broker with {MIGRATE}."
            ),
        }
    if new[:2] == old[:2]:
        return {**plan, "action": "patch", "message": f"RabbitMQ {installed} can be upgraded in place to {candidate}."}
    step = paths.get(_series(old))
    if step and str(step["to"]) == _series(new):
        floor = str(step.get("from_min") or "")
        if floor and old < parse_version(floor):
            return {
                **plan,
                "action": "unsupported",
                "message": (
                    f"RabbitMQ {installed} cannot be upgraded in place to {candidate}: the step "
                    f"{_series(old)} -> {_series(new)} starts from {floor} or later; upgrade to the latest "
                    f"{_series(old)} first, or move to a new broker with {MIGRATE}."
                ),
            }
        return {
            **plan,
            "action": "upgrade",
            "message": f"RabbitMQ {installed} can be upgraded in place to {candidate}.",
        }
    through = _path(_series(old), _series(new), paths)
    route = (
        f"RabbitMQ upgrades one series at a time ({' -> '.join(through)}), with all stable feature flags "
        "enabled before each step, and apt offers only the last one"
        if through
        else f"RabbitMQ has no upgrade path from {_series(old)} to {_series(new)}"
    )
    return {
        **plan,
        "action": "unsupported",
        "message": (
            f"RabbitMQ {installed} is installed and apt offers {candidate}, a jump RabbitMQ does not support "
            f"in place: {route}; build a new broker beside this one (site.yml) and move to it with {MIGRATE}."
        ),
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rabbitmq_upgrade_plan": rabbitmq_upgrade_plan}
