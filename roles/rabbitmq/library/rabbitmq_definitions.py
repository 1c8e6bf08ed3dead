#!/usr/bin/python
"""Converge a RabbitMQ node's vhosts, users, permissions and topology through its HTTP API."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rabbitmq_definitions
short_description: Converge vhosts, users, permissions, exchanges, queues, bindings and policies
description:
  - Reads the node's current definitions with one call to C(GET /api/definitions), compares them with
    what is asked for, and sends only the differences. Passwords are checked against the stored salted
    hash, so a changed password is always applied and an unchanged one never reported as a change.
  - Permissions of the listed users are authoritative; other users, vhosts and objects are left alone.
  - Queue and exchange properties cannot change in place; a difference fails with an explanation.
options:
  api_url: {type: str, default: "http://127.0.0.1:15672", description: Management API base URL.}
  login_user: {type: str, required: true, description: Administrator user.}
  login_password: {type: str, required: true, no_log: true, description: Its password.}
  vhosts: {type: list, elements: str, default: [], description: Virtual hosts that must exist.}
  users: {type: list, elements: dict, default: [], description: "Users: name, password, tags, permissions."}
  absent_users: {type: list, elements: str, default: [], description: Users that must not exist.}
  exchanges: {type: list, elements: dict, default: [], description: "Exchanges: name, vhost, type, durable."}
  queues: {type: list, elements: dict, default: [], description: "Queues: name, vhost, type, durable, arguments."}
  bindings: {type: list, elements: dict, default: [], description: Bindings.}
  policies: {type: list, elements: dict, default: [], description: Policies.}
  timeout: {type: int, default: 30, description: Seconds per HTTP call.}
author: bundle maintainers
"""

RETURN = r"""
changes:
  description: One line per change made (or that would be made in check mode); no secrets.
  type: list
  elements: str
  returned: always
"""

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib import error, request
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule

_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}


class ApiError(Exception):
    """An HTTP API call failed; the message is safe to show."""


def password_matches(password_hash: str, algorithm: str, password: str) -> bool:
    """True when password is the one behind RabbitMQ's salted hash (4-byte salt + digest)."""
    if not password_hash:
        return False
    digest = _HASHES.get(algorithm or "rabbit_password_hashing_sha256")
    if digest is None:
        return False
    raw = base64.b64decode(password_hash)
    salt, expected = raw[:4], raw[4:]
    return hmac.compare_digest(digest(salt + password.encode("utf-8")).digest(), expected)


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return sorted(t for t in (value or []) if t)


def _queue_args(args: dict | None) -> dict:
    merged = dict(args or {})
    merged.setdefault("x-queue-type", "classic")
    return merged


def _q(value: str) -> str:
    return quote(value, safe="")


def plan(current: dict, wanted: dict) -> tuple[list[tuple[str, str, str, dict | None]], list[str]]:
    """Compare current definitions with wanted ones.

    Returns (calls, conflicts): calls are (description, method, path, body) in a safe order;
    conflicts are differences that cannot be applied in place.
    """
    calls: list[tuple[str, str, str, dict | None]] = []
    conflicts: list[str] = []

    have_vhosts = {v["name"] for v in current.get("vhosts", [])}
    for vhost in wanted["vhosts"]:
        if vhost not in have_vhosts:
            calls.append((f"create vhost {vhost}", "PUT", f"vhosts/{_q(vhost)}", {}))

    users = {u["name"]: u for u in current.get("users", [])}
    perms = {(p["user"], p["vhost"]): p for p in current.get("permissions", [])}
    for user in wanted["users"]:
        name = user["name"]
        have = users.get(name)
        tags = _tags(user.get("tags"))
        if have is None:
            reason = "create"
        elif not password_matches(have.get("password_hash", ""), have.get("hashing_algorithm", ""), user["password"]):
            reason = "update password of"
        elif _tags(have.get("tags")) != tags:
            reason = "update tags of"
        else:
            reason = ""
        if reason:
            calls.append(
                (
                    f"{reason} user {name}",
                    "PUT",
                    f"users/{_q(name)}",
                    {"password": user["password"], "tags": ",".join(tags)},
                )
            )
        wanted_perms = {p["vhost"]: p for p in user.get("permissions") or []}
        for vhost, p in wanted_perms.items():
            body = {key: p.get(f"{key}_priv") or "^$" for key in ("configure", "write", "read")}
            have_p = perms.get((name, vhost))
            if have_p is None or any(have_p.get(k) != v for k, v in body.items()):
                calls.append(
                    (f"set permissions of {name} on {vhost}", "PUT", f"permissions/{_q(vhost)}/{_q(name)}", body)
                )
        for perm_user, vhost in sorted(perms):
            if perm_user == name and vhost not in wanted_perms:
                calls.append(
                    (f"remove permissions of {name} on {vhost}", "DELETE", f"permissions/{_q(vhost)}/{_q(name)}", None)
                )

    exchanges = {(e["vhost"], e["name"]): e for e in current.get("exchanges", [])}
    for ex in wanted["exchanges"]:
        vhost, name = ex.get("vhost") or "/", ex["name"]
        body = {
            "type": ex.get("type") or "direct",
            "durable": ex.get("durable", True) is not False,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
        have = exchanges.get((vhost, name))
        if have is None:
            calls.append((f"declare exchange {vhost} {name}", "PUT", f"exchanges/{_q(vhost)}/{_q(name)}", body))
        elif have.get("type") != body["type"] or bool(have.get("durable")) != body["durable"]:
            conflicts.append(
                f"exchange {name} on vhost {vhost} exists as {have.get('type')} "
                f"durable={have.get('durable')}, wanted {body['type']} durable={body['durable']}"
            )

    queues = {(q["vhost"], q["name"]): q for q in current.get("queues", [])}
    for queue in wanted["queues"]:
        vhost, name = queue.get("vhost") or "/", queue["name"]
        args = {"x-queue-type": queue.get("type") or "quorum", **(queue.get("arguments") or {})}
        body = {"durable": queue.get("durable", True) is not False, "auto_delete": False, "arguments": args}
        have = queues.get((vhost, name))
        if have is None:
            calls.append((f"declare queue {vhost} {name}", "PUT", f"queues/{_q(vhost)}/{_q(name)}", body))
        elif _queue_args(have.get("arguments")) != _queue_args(args) or bool(have.get("durable")) != body["durable"]:
            conflicts.append(
                f"queue {name} on vhost {vhost} exists with arguments {json.dumps(have.get('arguments'))} "
                f"durable={have.get('durable')}, wanted {json.dumps(args)}: queue properties cannot "
                "change in place; delete the queue (after draining it) or change it through a policy"
            )

    bindings = {
        (b["vhost"], b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in current.get("bindings", [])
    }
    for binding in wanted["bindings"]:
        vhost = binding.get("vhost") or "/"
        dtype = binding.get("destination_type") or "queue"
        key = binding.get("routing_key")
        key = "#" if key is None else key
        if (vhost, binding["source"], binding["destination"], dtype, key) not in bindings:
            calls.append(
                (
                    f"bind {vhost} {binding['source']} -> {binding['destination']} ({key})",
                    "POST",
                    f"bindings/{_q(vhost)}/e/{_q(binding['source'])}/{dtype[0]}/{_q(binding['destination'])}",
                    {"routing_key": key, "arguments": {}},
                )
            )

    policies = {(p["vhost"], p["name"]): p for p in current.get("policies", [])}
    for policy in wanted["policies"]:
        vhost, name = policy.get("vhost") or "/", policy["name"]
        body = {
            "pattern": policy["pattern"],
            "definition": policy["definition"],
            "priority": int(policy.get("priority") or 0),
            "apply-to": policy.get("apply_to") or "queues",
        }
        have = policies.get((vhost, name))
        if have is None or any(have.get(k) != v for k, v in body.items()):
            calls.append((f"apply policy {vhost} {name}", "PUT", f"policies/{_q(vhost)}/{_q(name)}", body))

    for name in wanted["absent_users"]:
        if name in users:
            calls.append((f"remove user {name}", "DELETE", f"users/{_q(name)}", None))
    return calls, conflicts


class Api:
    def __init__(self, url: str, user: str, password: str, timeout: int) -> None:
        self.base = url.rstrip("/") + "/api/"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = request.Request(self.base + path, data=data, method=method, headers=self.headers)  # noqa: S310 - http(s) URL from the role
        try:
            with request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) URL from the role
                payload = resp.read()
        except error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 401:
                raise ApiError(f"{method} {path}: the management API refused the credentials") from None
            raise ApiError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (error.URLError, OSError) as exc:
            raise ApiError(f"{method} {path}: cannot reach the management API at {self.base}: {exc}") from None
        return json.loads(payload) if payload else None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "api_url": {"type": "str", "default": "http://127.0.0.1:15672"},
            "login_user": {"type": "str", "required": True},
            "login_password": {"type": "str", "required": True, "no_log": True},
            "vhosts": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "dict", "default": [], "no_log": True},
            "absent_users": {"type": "list", "elements": "str", "default": []},
            "exchanges": {"type": "list", "elements": "dict", "default": []},
            "queues": {"type": "list", "elements": "dict", "default": []},
            "bindings": {"type": "list", "elements": "dict", "default": []},
            "policies": {"type": "list", "elements": "dict", "default": []},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    p = module.params
    api = Api(p["api_url"], p["login_user"], p["login_password"], p["timeout"])
    try:
        current = api.call("GET", "definitions")
        calls, conflicts = plan(current, p)
        if conflicts:
            module.fail_json(msg="; ".join(conflicts), changes=[c[0] for c in calls])
        if not module.check_mode:
            for _, method, path, body in calls:
                api.call(method, path, body)
    except ApiError as exc:
        module.fail_json(msg=str(exc), changes=[])
    module.exit_json(changed=bool(calls), changes=[c[0] for c in calls])


if __name__ == "__main__":
    main()
