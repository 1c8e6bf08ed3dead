"""Definitions other roles hand to this one (rabbitmq_dependent_definitions), merged with the inventory's.

An application role declares what it needs from the brokers (the worker role: its queues, exchanges,
bindings and dead-letter policy) and the brokers' play passes those lists here, the way DebOps lets an
application role hand its needs to `rabbitmq_server`. Each item is a dict with `owner` (who needs it,
for messages) and any of `exchanges`, `queues`, `bindings`, `policies` in this role's own format.

- `rabbitmq_merge_dependent(user, dependents, kind)`: the inventory's objects of one kind followed by the
  dependents' ones it does not already hold (an identical object is declared once).
- `rabbitmq_dependent_conflicts(user, dependents)`: one sentence per conflict; empty when there is none:
  an object of the same name and vhost declared differently (by the inventory and a dependent, or by two
  dependents), and an inventory policy that would replace a dependent's policy on one of its queues
  (RabbitMQ applies only the highest-priority policy matching a queue: one of equal or higher priority
  whose definition lacks the dependent's keys or sets them otherwise takes those settings away).
"""

from __future__ import annotations

import re
from typing import Any

KINDS = ("exchanges", "queues", "bindings", "policies")
_SINGULAR = {"exchanges": "exchange", "queues": "queue", "bindings": "binding", "policies": "policy"}
_QUEUE_TARGETS = ("all", "queues", "quorum_queues", "classic_queues")


def _vhost(obj: dict[str, Any]) -> str:
    return str(obj.get("vhost") or "/")


def _key(kind: str, obj: dict[str, Any]) -> tuple[str, ...]:
    if kind == "bindings":
        return (
            _vhost(obj),
            str(obj["source"]),
            str(obj["destination"]),
            str(obj.get("destination_type") or "queue"),
            "#" if obj.get("routing_key") is None else str(obj["routing_key"]),
        )
    return (_vhost(obj), str(obj["name"]))


def _normal(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object with this role's defaults filled in, so that equal declarations compare equal."""
    if kind == "queues":
        return {
            "type": obj.get("type") or "quorum",
            "durable": obj.get("durable", True),
            "arguments": {k: _scalar(v) for k, v in (obj.get("arguments") or {}).items()},
        }
    if kind == "exchanges":
        return {"type": obj.get("type") or "direct", "durable": obj.get("durable", True)}
    if kind == "policies":
        return {
            "pattern": obj["pattern"],
            "apply_to": obj.get("apply_to") or "queues",
            "priority": int(obj.get("priority") or 0),
            "definition": {k: _scalar(v) for k, v in obj["definition"].items()},
        }
    return {"arguments": dict(obj.get("arguments") or {})}


def _scalar(value: Any) -> Any:
    """Numbers that came through a template as text compare as numbers."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _describe(kind: str, key: tuple[str, ...]) -> str:
    if kind == "bindings":
        return f"binding {key[1]} -> {key[2]} (routing key {key[4]}) in vhost {key[0]}"
    return f"{_SINGULAR[kind]} {key[1]} in vhost {key[0]}"


def _dependent_objects(dependents: list[dict[str, Any]], kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (str(dep.get("owner") or "a dependent role"), obj) for dep in dependents or [] for obj in dep.get(kind) or []
    ]


def rabbitmq_merge_dependent(user: list[dict[str, Any]], dependents: list[dict[str, Any]], kind: str) -> list[Any]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    merged = list(user or [])
    seen = {_key(kind, obj) for obj in merged}
    for _owner, obj in _dependent_objects(dependents, kind):
        key = _key(kind, obj)
        if key not in seen:
            seen.add(key)
            merged.append(obj)
    return merged


def rabbitmq_dependent_conflicts(user: dict[str, list[dict[str, Any]]], dependents: list[dict[str, Any]]) -> list[str]:
    """`user` maps each kind to the inventory's list (rabbitmq_queues, ...)."""
    problems: list[str] = []
    for kind in KINDS:
        declared: dict[tuple[str, ...], tuple[str, dict[str, Any]]] = {}
        for obj in user.get(kind) or []:
            declared.setdefault(_key(kind, obj), ("the inventory (rabbitmq_" + kind + ")", _normal(kind, obj)))
        for owner, obj in _dependent_objects(dependents, kind):
            key, normal = _key(kind, obj), _normal(kind, obj)
            if key in declared and declared[key][1] != normal:
                other, theirs = declared[key]
                problems.append(
                    f"{_describe(kind, key)} is declared by {owner} as {normal} but by {other} as {theirs}: "
                    "remove it from the inventory (the role that needs it declares it) or make the two agree."
                )
            declared.setdefault(key, (owner, normal))
    problems.extend(_overriding_policies(user, dependents))
    return problems


def _overriding_policies(user: dict[str, list[dict[str, Any]]], dependents: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    queues = _dependent_objects(dependents, "queues")
    for owner, policy in _dependent_objects(dependents, "policies"):
        wanted = _normal("policies", policy)
        targets = [
            q["name"]
            for _o, q in queues
            if _vhost(q) == _vhost(policy) and re.search(wanted["pattern"], str(q["name"]))
        ]
        for mine in user.get("policies") or []:
            if _vhost(mine) != _vhost(policy) or str(mine["name"]) == str(policy["name"]):
                continue  # same name: compared as a declaration above
            theirs = _normal("policies", mine)
            if theirs["apply_to"] not in _QUEUE_TARGETS or theirs["priority"] < wanted["priority"]:
                continue
            hit = [name for name in targets if re.search(theirs["pattern"], str(name))]
            lacking = {k: v for k, v in wanted["definition"].items() if theirs["definition"].get(k) != v}
            if hit and lacking:
                problems.append(
                    f"policy {mine['name']} in vhost {_vhost(mine)} (priority {theirs['priority']}) matches "
                    f"{', '.join(hit)} and would replace the policy {policy['name']} that {owner} needs there "
                    f"(priority {wanted['priority']}), losing {lacking}: give it a lower priority, a pattern that "
                    "leaves those queues out, or the same values."
                )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_merge_dependent": rabbitmq_merge_dependent,
            "rabbitmq_dependent_conflicts": rabbitmq_dependent_conflicts,
        }
