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
  login_password: {type: str, required: true, description: Its password.}
  vhosts: {type: list, elements: str, default: [], description: Virtual hosts that must exist.}
  users:
    type: list
    elements: dict
    default: []
    description: Users, converged with their tags and per-vhost permissions.
    suboptions:
      name: {type: str, required: true, description: User name.}
      password: {type: str, required: true, description: "Password; the only secret, masked everywhere."}
      tags: {type: list, elements: str, default: [], description: Tags such as administrator or monitoring.}
      permissions:
        type: list
        elements: dict
        default: []
        description: Per-vhost permissions; a regex left out means C(^$) (nothing).
        suboptions:
          vhost: {type: str, required: true, description: Virtual host.}
          configure_priv: {type: str, description: Configure regex.}
          write_priv: {type: str, description: Write regex.}
          read_priv: {type: str, description: Read regex.}
  absent_users: {type: list, elements: str, default: [], description: Users that must not exist.}
  exchanges: {type: list, elements: dict, default: [], description: "Exchanges: name, vhost, type, durable."}
  queues: {type: list, elements: dict, default: [], description: "Queues: name, vhost, type, durable, arguments."}
  bindings: {type: list, elements: dict, default: [], description: Bindings.}
  policies: {type: list, elements: dict, default: [], description: Policies.}
  vhost_limits:
    type: list
    elements: dict
    default: []
    description:
      - "Per-vhost limits: vhost, max_connections, max_queues. For a listed vhost the limits are authoritative:
        a limit left out (or null) is removed."
  user_limits:
    type: list
    elements: dict
    default: []
    description: "Per-user limits: user, max_connections, max_channels; authoritative like I(vhost_limits)."
  operator_policies:
    type: list
    elements: dict
    default: []
    description:
      - "Operator policies (name, vhost, pattern, definition, priority, apply_to): limits that an application's
        own policy or queue arguments cannot exceed (the lower value wins)."
  timeout: {type: int, default: 30, description: Seconds per HTTP call.}
author: Bundle maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Converge the application's vhost and user, and remove guest
  bundle.ops.rabbitmq_definitions:
    api_url: http://127.0.0.1:15672
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
    vhosts: [app]
    users:
      - name: app
        password: "{{ rabbitmq_app_password }}"
        tags: []
        permissions:
          - {vhost: app, configure_priv: ".*", write_priv: ".*", read_priv: ".*"}
    absent_users: [guest]

- name: Converge a quorum queue with its dead-letter policy
  bundle.ops.rabbitmq_definitions:
    api_url: http://127.0.0.1:15672
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
    queues:
      - {vhost: app, name: jobs}
    policies:
      - {vhost: app, name: jobs, pattern: "^jobs$", definition: {delivery-limit: 50, dead-letter-exchange: jobs.dlx}}
"""

RETURN = r"""
changes:
  description: >-
    One line per change made (or that would be made in check mode), naming the object or user; never a
    password or a hash. On a failure, the changes made before it.
  type: list
  elements: str
  returned: always
diff:
  description: The same lines, for C(--diff).
  type: dict
  returned: changed
"""

import base64
import hashlib
import hmac
import json
from typing import Any, NamedTuple
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


def _perm_path(vhost: str, user: str) -> str:
    return f"permissions/{_q(vhost)}/{_q(user)}"


class Call(NamedTuple):
    """One HTTP API call: what it does (no secrets), then method, path and body."""

    description: str
    method: str
    path: str
    body: dict | None


class Plan(NamedTuple):
    """Calls to make, in a safe order, and differences that cannot be applied in place."""

    calls: list[Call]
    conflicts: list[str]


def plan_vhosts(current: dict, wanted: list[str]) -> Plan:
    have = {v["name"] for v in current.get("vhosts", [])}
    return Plan([Call(f"create vhost {v}", "PUT", f"vhosts/{_q(v)}", {}) for v in wanted if v not in have], [])


def plan_users(current: dict, wanted: list[dict]) -> Plan:
    """Create users, or update them when the password or the tags differ (the body carries the password)."""
    users = {u["name"]: u for u in current.get("users", [])}
    calls = []
    for user in wanted:
        name, tags = user["name"], _tags(user.get("tags"))
        have = users.get(name)
        if have is None:
            reason = "create"
        elif not password_matches(have.get("password_hash", ""), have.get("hashing_algorithm", ""), user["password"]):
            reason = "update password of"
        elif _tags(have.get("tags")) != tags:
            reason = "update tags of"
        else:
            continue
        body = {"password": user["password"], "tags": ",".join(tags)}
        calls.append(Call(f"{reason} user {name}", "PUT", f"users/{_q(name)}", body))
    return Plan(calls, [])


def plan_permissions(current: dict, wanted: list[dict]) -> Plan:
    """Per-vhost permissions of the listed users, authoritative: others of theirs are removed."""
    perms = {(p["user"], p["vhost"]): p for p in current.get("permissions", [])}
    calls = []
    for user in wanted:
        name = user["name"]
        wanted_perms = {p["vhost"]: p for p in user.get("permissions") or []}
        for vhost, p in wanted_perms.items():
            body = {key: p.get(f"{key}_priv") or "^$" for key in ("configure", "write", "read")}
            have = perms.get((name, vhost))
            if have is None or any(have.get(k) != v for k, v in body.items()):
                calls.append(Call(f"set permissions of {name} on {vhost}", "PUT", _perm_path(vhost, name), body))
        for perm_user, vhost in sorted(perms):
            if perm_user == name and vhost not in wanted_perms:
                calls.append(Call(f"remove permissions of {name} on {vhost}", "DELETE", _perm_path(vhost, name), None))
    return Plan(calls, [])


def plan_exchanges(current: dict, wanted: list[dict]) -> Plan:
    exchanges = {(e["vhost"], e["name"]): e for e in current.get("exchanges", [])}
    calls, conflicts = [], []
    for ex in wanted:
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
            calls.append(Call(f"declare exchange {vhost} {name}", "PUT", f"exchanges/{_q(vhost)}/{_q(name)}", body))
        elif have.get("type") != body["type"] or bool(have.get("durable")) != body["durable"]:
            conflicts.append(
                f"exchange {name} on vhost {vhost} exists as {have.get('type')} "
                f"durable={have.get('durable')}, wanted {body['type']} durable={body['durable']}"
            )
    return Plan(calls, conflicts)


def plan_queues(current: dict, wanted: list[dict]) -> Plan:
    queues = {(q["vhost"], q["name"]): q for q in current.get("queues", [])}
    calls, conflicts = [], []
    for queue in wanted:
        vhost, name = queue.get("vhost") or "/", queue["name"]
        args = {"x-queue-type": queue.get("type") or "quorum", **(queue.get("arguments") or {})}
        body = {"durable": queue.get("durable", True) is not False, "auto_delete": False, "arguments": args}
        have = queues.get((vhost, name))
        if have is None:
            calls.append(Call(f"declare queue {vhost} {name}", "PUT", f"queues/{_q(vhost)}/{_q(name)}", body))
        elif _queue_args(have.get("arguments")) != _queue_args(args) or bool(have.get("durable")) != body["durable"]:
            conflicts.append(
                f"queue {name} on vhost {vhost} exists with arguments {json.dumps(have.get('arguments'))} "
                f"durable={have.get('durable')}, wanted {json.dumps(args)}: queue properties cannot "
                "change in place; delete the queue (after draining it) or change it through a policy"
            )
    return Plan(calls, conflicts)


def plan_bindings(current: dict, wanted: list[dict]) -> Plan:
    have = {
        (b["vhost"], b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in current.get("bindings", [])
    }
    calls = []
    for binding in wanted:
        vhost, source, dest = binding.get("vhost") or "/", binding["source"], binding["destination"]
        dtype = binding.get("destination_type") or "queue"
        key = binding.get("routing_key")
        key = "#" if key is None else key
        if (vhost, source, dest, dtype, key) not in have:
            calls.append(
                Call(
                    f"bind {vhost} {source} -> {dest} ({key})",
                    "POST",
                    f"bindings/{_q(vhost)}/e/{_q(source)}/{dtype[0]}/{_q(dest)}",
                    {"routing_key": key, "arguments": {}},
                )
            )
    return Plan(calls, [])


def plan_policies(current: dict, wanted: list[dict]) -> Plan:
    policies = {(p["vhost"], p["name"]): p for p in current.get("policies", [])}
    calls = []
    for policy in wanted:
        vhost, name, body = policy.get("vhost") or "/", policy["name"], _policy_body(policy)
        have = policies.get((vhost, name))
        if have is None or any(have.get(k) != v for k, v in body.items()):
            calls.append(Call(f"apply policy {vhost} {name}", "PUT", f"policies/{_q(vhost)}/{_q(name)}", body))
    return Plan(calls, [])


def _limits_plan(kind: str, key: str, current: list[dict], wanted: list[dict], names: tuple[str, ...]) -> Plan:
    """Limits of the listed vhosts or users (key), authoritative: a limit left out is removed."""
    have = {entry[key]: entry.get("value") or {} for entry in current}
    calls = []
    for item in wanted:
        owner, limits = item[key], have.get(item[key], {})
        for name in names:
            value, limit = item.get(name), name.replace("_", "-")
            path = f"{kind}-limits/{_q(owner)}/{limit}"
            if value is not None and limits.get(limit) != int(value):
                calls.append(Call(f"set {limit} of {kind} {owner} to {int(value)}", "PUT", path, {"value": int(value)}))
            elif value is None and limit in limits:
                calls.append(Call(f"remove {limit} of {kind} {owner}", "DELETE", path, None))
    return Plan(calls, [])


def plan_vhost_limits(current: dict, wanted: list[dict]) -> Plan:
    return _limits_plan("vhost", "vhost", current.get("vhost_limits", []), wanted, ("max_connections", "max_queues"))


def plan_user_limits(current: dict, wanted: list[dict]) -> Plan:
    return _limits_plan("user", "user", current.get("user_limits", []), wanted, ("max_connections", "max_channels"))


def _policy_body(policy: dict) -> dict:
    return {
        "pattern": policy["pattern"],
        "definition": policy["definition"],
        "priority": int(policy.get("priority") or 0),
        "apply-to": policy.get("apply_to") or "queues",
    }


def plan_operator_policies(current: dict, wanted: list[dict]) -> Plan:
    policies = {(p["vhost"], p["name"]): p for p in current.get("operator_policies", [])}
    calls = []
    for policy in wanted:
        vhost, name, body = policy.get("vhost") or "/", policy["name"], _policy_body(policy)
        have = policies.get((vhost, name))
        if have is None or any(have.get(k) != v for k, v in body.items()):
            path = f"operator-policies/{_q(vhost)}/{_q(name)}"
            calls.append(Call(f"apply operator policy {vhost} {name}", "PUT", path, body))
    return Plan(calls, [])


def plan_absent_users(current: dict, wanted: list[str]) -> Plan:
    have = {u["name"] for u in current.get("users", [])}
    return Plan([Call(f"remove user {n}", "DELETE", f"users/{_q(n)}", None) for n in wanted if n in have], [])


# In the order the calls are safe to make: vhosts and users before the
# permissions and limits on them, exchanges and queues before the bindings
# between them, and guest removed last, once the administrator has been
# converged.
PLANNERS = (
    ("vhosts", plan_vhosts),
    ("users", plan_users),
    ("users", plan_permissions),
    ("vhost_limits", plan_vhost_limits),
    ("user_limits", plan_user_limits),
    ("exchanges", plan_exchanges),
    ("queues", plan_queues),
    ("bindings", plan_bindings),
    ("policies", plan_policies),
    ("operator_policies", plan_operator_policies),
    ("absent_users", plan_absent_users),
)

# What GET definitions does not carry, read from its own endpoint only when asked for.
EXTRA_READS = (
    ("vhost_limits", "vhost-limits"),
    ("user_limits", "user-limits"),
    ("operator_policies", "operator-policies"),
)


def plan(current: dict, wanted: dict) -> Plan:
    """Compare current definitions with the wanted ones, entity kind by entity kind."""
    calls: list[Call] = []
    conflicts: list[str] = []
    for key, planner in PLANNERS:
        part = planner(current, wanted.get(key) or [])
        calls += part.calls
        conflicts += part.conflicts
    return Plan(calls, conflicts)


def converge(api: Any, wanted: dict, check_mode: bool) -> dict:
    """Read, plan and (unless check_mode) apply; the module's result.

    The result names objects and users only: call bodies, which carry passwords, never leave this function,
    and neither do the current definitions, which carry password hashes.
    """
    done: list[str] = []
    try:
        current = dict(api.call("GET", "definitions"))
        for key, path in EXTRA_READS:
            if wanted.get(key):
                current[key] = api.call("GET", path) or []
        calls, conflicts = plan(current, wanted)
        changes = [c.description for c in calls]
        if conflicts:
            return {"failed": True, "changed": False, "msg": "; ".join(conflicts), "changes": changes}
        for call in calls if not check_mode else []:
            api.call(call.method, call.path, call.body)
            done.append(call.description)
    except ApiError as exc:
        return {"failed": True, "changed": bool(done), "msg": str(exc), "changes": done}
    result = {"changed": bool(changes), "changes": changes}
    if changes:
        result["diff"] = {"prepared": "\n".join(changes) + "\n"}
    return result


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
            # A rejected user body could be echoed back with its password: not shown.
            detail = "" if body and "password" in body else exc.read().decode(errors="replace")[:300]
            if exc.code == 401:
                raise ApiError(f"{method} {path}: the management API refused the credentials") from None
            raise ApiError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (error.URLError, OSError) as exc:
            raise ApiError(f"{method} {path}: cannot reach the management API at {self.base}: {exc}") from None
        return json.loads(payload) if payload else None


_PERMISSION = {
    "vhost": {"type": "str", "required": True},
    "configure_priv": {"type": "str"},
    "write_priv": {"type": "str"},
    "read_priv": {"type": "str"},
}
_USER = {
    "name": {"type": "str", "required": True},
    # The one secret: masked in every output, including the invocation and failure messages.
    "password": {"type": "str", "required": True, "no_log": True},
    "tags": {"type": "list", "elements": "str", "default": []},
    "permissions": {"type": "list", "elements": "dict", "default": [], "options": _PERMISSION},
}
ARGUMENT_SPEC = {
    "api_url": {"type": "str", "default": "http://127.0.0.1:15672"},
    "login_user": {"type": "str", "required": True},
    "login_password": {"type": "str", "required": True, "no_log": True},
    "vhosts": {"type": "list", "elements": "str", "default": []},
    "users": {"type": "list", "elements": "dict", "default": [], "options": _USER},
    "absent_users": {"type": "list", "elements": "str", "default": []},
    "exchanges": {"type": "list", "elements": "dict", "default": []},
    "queues": {"type": "list", "elements": "dict", "default": []},
    "bindings": {"type": "list", "elements": "dict", "default": []},
    "policies": {"type": "list", "elements": "dict", "default": []},
    "vhost_limits": {"type": "list", "elements": "dict", "default": []},
    "user_limits": {"type": "list", "elements": "dict", "default": []},
    "operator_policies": {"type": "list", "elements": "dict", "default": []},
    "timeout": {"type": "int", "default": 30},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    api = Api(p["api_url"], p["login_user"], p["login_password"], p["timeout"])
    result = converge(api, p, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
