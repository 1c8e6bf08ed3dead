"""playbooks/migrate.yml: what of blue's definitions green still lacks, made valid for green.

`migrate_definitions_delta(blue, green, green_version, keep_users)` takes the two brokers'
`GET /api/definitions` documents and returns {"import": a definitions document with only
what green lacks (ready for `POST /api/definitions`), "plan": sentences, "conflicts":
sentences}. Rules:

- vhosts, permissions, topic permissions, exchanges, queues, bindings, policies and
  vhost-scoped parameters (not shovels) missing on green are copied; existing ones are
  never overwritten (a queue whose arguments differ is a conflict, reported);
- users are copied with their password hash and hashing algorithm when green lacks them
  or has another hash or tags, except `keep_users` (green's own administrator, whose
  credentials the playbook uses);
- for RabbitMQ 4 and later: classic mirroring is gone, so the `ha-*` keys are dropped
  from policies (a policy left empty is not copied) and durable classic queues such a
  policy mirrored on blue are declared as quorum queues.

`migrate_queue_names(definitions)` lists the durable, non-exclusive queues as
{"vhost", "name"}: the queues whose messages the shovels move.

`migrate_shovel_plan(queues, existing, dest_uri)` plans one dynamic shovel per such queue
(blue's queue -> the same queue on green, acknowledged on blue once green confirmed it):
{"shovels": every wanted shovel as {"key", "vhost", "name", "queue", "value"},
"start": those not among `existing` (blue's `GET /api/parameters/shovel`)}. `dest_uri` is
green's AMQP URI without the vhost (`amqp://user:password@host:port/`), or its AMQPS URI with the TLS
parameters as a query (`amqps://user:password@host:5671/?cacertfile=...`), the vhost put before it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

_HA_KEYS = (
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "ha-sync-batch-size",
)


def _major(version: str) -> int:
    match = re.match(r"^(\d+)", version)
    return int(match[1]) if match else 0


def _policy_applies(policy: dict[str, Any], queue: dict[str, Any]) -> bool:
    return (
        policy.get("vhost") == queue.get("vhost")
        and policy.get("apply-to", "all") in ("all", "queues", "classic_queues")
        and re.search(str(policy.get("pattern", "")), str(queue.get("name", ""))) is not None
    )


def _green_queue(queue: dict[str, Any], mirrored: bool, green_major: int) -> dict[str, Any]:
    args = dict(queue.get("arguments") or {})
    if (
        green_major >= 4
        and mirrored
        and queue.get("durable", True)
        and args.get("x-queue-type", "classic") == "classic"
    ):
        args["x-queue-type"] = "quorum"
        return {**queue, "arguments": args, "auto_delete": False}
    return queue


def _tags(user: dict[str, Any]) -> list[str]:
    """A user's tags, whether exported as a list or as one comma-separated string."""
    tags = user.get("tags") or []
    return sorted(t for t in (tags.split(",") if isinstance(tags, str) else tags) if t)


def migrate_queue_names(definitions: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"vhost": q["vhost"], "name": q["name"]}
        for q in definitions.get("queues", [])
        if q.get("durable", True) and not q.get("exclusive", False) and not str(q["name"]).startswith("amq.")
    ]


SHOVEL_PREFIX = "migrate-"


def _vhost_path(vhost: str) -> str:
    return urllib.parse.quote(vhost, safe="")


def _with_vhost(uri: str, vhost: str) -> str:
    """`uri` (ending in the path's "/", perhaps followed by a query) with the vhost as its path."""
    base, query = uri.split("?", 1) if "?" in uri else (uri, "")
    return base + _vhost_path(vhost) + ("?" + query if query else "")


def migrate_shovel_plan(queues: list[dict[str, str]], existing: list[dict[str, Any]], dest_uri: str) -> dict[str, Any]:
    running = {(p["vhost"], p["name"]) for p in existing if str(p.get("name", "")).startswith(SHOVEL_PREFIX)}
    shovels = []
    for queue in queues:
        vhost, name = queue["vhost"], queue["name"]
        shovel = SHOVEL_PREFIX + name
        value = {
            "src-protocol": "amqp091",
            "src-uri": "amqp:///" + _vhost_path(vhost),
            "src-queue": name,
            "dest-protocol": "amqp091",
            "dest-uri": _with_vhost(dest_uri, vhost),
            "dest-queue": name,
            "dest-add-forward-headers": False,
            "ack-mode": "on-confirm",
            "src-delete-after": "never",
            "reconnect-delay": 5,
        }
        shovels.append({"key": f"{vhost}|{shovel}", "vhost": vhost, "name": shovel, "queue": name, "value": value})
    return {"shovels": shovels, "start": [s for s in shovels if (s["vhost"], s["name"]) not in running]}


def migrate_definitions_delta(
    blue: dict[str, Any], green: dict[str, Any], green_version: str, keep_users: list[str] | None = None
) -> dict[str, Any]:
    green_major = _major(green_version)
    keep = set(keep_users or [])
    delta: dict[str, list[Any]] = {}
    plan: list[str] = []
    conflicts: list[str] = []

    def add(kind: str, item: dict[str, Any], what: str) -> None:
        delta.setdefault(kind, []).append(item)
        plan.append(what)

    green_vhosts = {v["name"] for v in green.get("vhosts", [])}
    for vhost in blue.get("vhosts", []):
        if vhost["name"] not in green_vhosts:
            add("vhosts", vhost, f"vhost {vhost['name']}")

    green_users = {u["name"]: u for u in green.get("users", [])}
    for user in blue.get("users", []):
        mine = green_users.get(user["name"])
        if user["name"] in keep:
            continue
        same = (
            mine is not None
            and all(mine.get(key) == user.get(key) for key in ("password_hash", "hashing_algorithm"))
            and _tags(mine) == _tags(user)
        )
        if not same:
            add("users", user, f"user {user['name']} ({'new' if mine is None else 'password hash and tags'})")

    def keyed(kind: str, key: tuple[str, ...], label: str) -> None:
        def ident(item: dict[str, Any]) -> str:
            return json.dumps([item.get(k) for k in key], sort_keys=True)

        have = {ident(item): item for item in green.get(kind, [])}
        for item in blue.get(kind, []):
            name = "/".join(str(item.get(k)) for k in key if k != "arguments" and item.get(k) != "")
            if have.get(ident(item)) == item:
                continue
            if ident(item) in have and kind == "exchanges":
                conflicts.append(f"{label} {name} differs on green (kept)")
                continue
            add(kind, item, f"{label} {name}")

    keyed("permissions", ("user", "vhost"), "permissions of")
    keyed("topic_permissions", ("user", "vhost", "exchange"), "topic permissions of")
    keyed("exchanges", ("vhost", "name"), "exchange")
    keyed("bindings", ("vhost", "source", "destination", "destination_type", "routing_key", "arguments"), "binding")

    mirrored_by = [p for p in blue.get("policies", []) if any(k in p.get("definition", {}) for k in _HA_KEYS)]
    green_queues = {(q["vhost"], q["name"]): q for q in green.get("queues", [])}
    for queue in blue.get("queues", []):
        wanted = _green_queue(queue, any(_policy_applies(p, queue) for p in mirrored_by), green_major)
        mine = green_queues.get((queue["vhost"], queue["name"]))
        label = f"queue {queue['vhost']}/{queue['name']}"
        if mine is None:
            add("queues", wanted, label + (" (as a quorum queue)" if wanted is not queue else ""))
        elif (mine.get("arguments") or {}).get("x-queue-type", "classic") != (wanted.get("arguments") or {}).get(
            "x-queue-type", "classic"
        ):
            conflicts.append(f"{label} has another type on green (kept; its messages are still moved)")

    green_policies = {(p["vhost"], p["name"]): p for p in green.get("policies", [])}
    for policy in blue.get("policies", []):
        definition = dict(policy.get("definition", {}))
        if green_major >= 4:
            definition = {k: v for k, v in definition.items() if k not in _HA_KEYS}
            if not definition:
                plan.append(f"policy {policy['vhost']}/{policy['name']} not copied (only classic mirroring)")
                continue
        wanted = {**policy, "definition": definition}
        if green_policies.get((policy["vhost"], policy["name"])) != wanted:
            add("policies", wanted, f"policy {policy['vhost']}/{policy['name']}")

    green_params = {(p["vhost"], p["component"], p["name"]) for p in green.get("parameters", [])}
    for param in blue.get("parameters", []):
        if param.get("component") == "shovel":
            continue
        if (param["vhost"], param["component"], param["name"]) not in green_params:
            add("parameters", param, f"parameter {param['component']} {param['vhost']}/{param['name']}")

    return {"import": delta, "plan": plan, "conflicts": conflicts}


def migrate_describe_client(connection: dict[str, Any]) -> str:
    """One client connection of GET /api/connections as "user from host:port (its name)"."""
    name = (connection.get("client_properties") or {}).get("connection_name", "")
    where = f"{connection.get('peer_host', '?')}:{connection.get('peer_port', '?')}"
    return f"{connection.get('user', '?')} from {where}" + (f" ({name})" if name else "")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "migrate_definitions_delta": migrate_definitions_delta,
            "migrate_queue_names": migrate_queue_names,
            "migrate_describe_client": migrate_describe_client,
            "migrate_shovel_plan": migrate_shovel_plan,
        }
