#!/usr/bin/python
"""Read a RabbitMQ node's health (and, on one node per cluster, the cluster's definitions) as report rows."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rabbitmq_doctor
short_description: Report a RabbitMQ node's health as rows of a table; changes nothing
description:
  - Runs on a broker node and reads, through the node's own management API and files, whether the node runs, is in
    its cluster with every expected node, has no alarm and no partition, has every stable feature flag on and
    no deprecated feature in use (RabbitMQ 3.13 and later), serves a certificate valid for long enough, got
    the file descriptor limit it is configured with, and whether its definitions backup timer is active with a
    recent enough export.
  - With O(cluster_checks), also reads the cluster's definitions through the management API once (one node
    per cluster is enough) - C(guest) absent, the queues other roles need present with the arguments they
    need, the depth of their dead-letter queues, and objects nobody declared.
  - Each row is a dict with C(check), C(state) (C(ok), C(warn), C(fail) or C(skip)) and C(detail). The module
    never fails because a check fails (the caller decides); it never changes anything, in check mode or not.
options:
  node:
    description: This node's name (as the management API names it).
    type: str
    required: true
  nodes:
    description: Node names expected in the cluster (this node's included); a standalone node lists itself.
    type: list
    elements: str
    default: []
  tls_certificate:
    description: The node's certificate file; empty skips the certificate check.
    type: path
    default: ""
  tls_min_days:
    description: Days the certificate must still be valid.
    type: int
    default: 30
  nofile_limit:
    description: The open-files limit the node is configured with; 0 skips the check.
    type: int
    default: 0
  backup_enabled:
    description: Whether the definitions backup timer should be active.
    type: bool
    default: true
  backup_dir:
    description: Where the backup exports are written (C(definitions-*.json)).
    type: path
    default: /var/backups/rabbitmq
  backup_unit:
    description: Name of the backup service (its timer is C(<name>.timer)).
    type: str
    default: rabbitmq-definitions-backup
  cluster_checks:
    description: Also run the cluster-wide checks through the management API.
    type: bool
    default: false
  api_url:
    description: Management API base URL, from the node itself.
    type: str
    default: http://127.0.0.1:15672
  login_user:
    description: Administrator user (for O(cluster_checks)).
    type: str
    default: ""
  login_password:
    description: Its password.
    type: str
    default: ""
  remove_guest:
    description: Whether C(guest) must be absent.
    type: bool
    default: true
  declared:
    description: >-
      What the inventory and other roles declare - keys C(vhosts), C(users) (names), C(exchanges),
      C(queues), C(policies) (dicts with C(name) and C(vhost)); other objects on the broker are reported
      (state warn).
    type: dict
    default: {}
  needs:
    description: >-
      What other roles need (the worker role's C(worker_broker_topology)) - each with C(owner), C(queues)
      and C(policies) in the rabbitmq role's format; every queue must exist with the arguments the queue and
      its highest-priority policy give it.
    type: list
    elements: dict
    default: []
  dead_letter_queues:
    description: Dead-letter queues (dicts with C(name), C(vhost)) whose depth is reported.
    type: list
    elements: dict
    default: []
  dead_letters_max:
    description: Messages a dead-letter queue may hold before its row fails.
    type: int
    default: 0
  timeout:
    description: Seconds per CLI or HTTP call.
    type: int
    default: 30
author: Bundle maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the node's health
  bundle.ops.rabbitmq_doctor:
    nodes: [rabbit@mq1, rabbit@mq2, rabbit@mq3]
    tls_certificate: /etc/rabbitmq/tls/cert.pem
    nofile_limit: 65536
  register: health
"""

RETURN = r"""
rows:
  description: One dict per check - C(check), C(state) (ok, warn, fail, skip), C(detail).
  type: list
  elements: dict
  returned: always
"""

import base64
import json
import os
import re
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib import error, request
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule

OK = "ok"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
_TIMESPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_SLACK_SECONDS = 3600  # a run may take a while, and a host may have been down


def row(check: str, state: str, detail: str) -> dict[str, str]:
    return {"check": check, "state": state, "detail": detail}


def parse_timespan(text: str) -> float:
    """Seconds of a systemd time span such as '1h', '1h 30min', '45s' or '0'."""
    text = text.strip()
    if text in ("", "0", "infinity"):
        return 0.0
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * _TIMESPAN_UNITS.get(unit or "s", 1)
    return total


def calendar_period(output: str) -> float | None:
    """Seconds between the first two elapses `systemd-analyze calendar --iterations=2` printed (UTC)."""
    stamps = re.findall(r"^\s*(?:Next elapse|Iter\S*\s*#2):\s*\w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", output, re.M)
    if len(stamps) < 2:
        return None
    first, second = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in stamps[:2])
    return (second - first).total_seconds()


def systemd_timestamp(text: str) -> float | None:
    """Epoch seconds of a systemd timestamp such as 'Wed 2026-12-02 21:55:02 UTC' (UTC only)."""
    match = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text or "")
    if not match:
        return None
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def backup_rows(
    *,
    enabled: bool,
    timer_active: bool,
    newest_export: float | None,
    period: float | None,
    delay: float,
    timer_since: float | None,
    now: float,
) -> list[dict[str, str]]:
    """The backup timer's rows: active when enabled; the newest export younger than the schedule allows."""
    if not enabled:
        return [row("definitions backup", SKIP, "rabbitmq_definitions_backup_enabled is false")]
    if not timer_active:
        return [row("definitions backup", FAIL, "the backup timer is not active (systemctl status ...timer)")]
    if period is None:
        return [row("definitions backup", WARN, "the timer's schedule could not be read; export age not checked")]
    allowed = period + delay + _SLACK_SECONDS
    if newest_export is None:
        if timer_since is not None and now - timer_since > allowed:
            return [row("definitions backup", FAIL, f"no export in {_age(now - timer_since)} of an active timer")]
        return [row("definitions backup", OK, "timer active, no export yet (its first run is still to come)")]
    age = now - newest_export
    state = OK if age <= allowed else FAIL
    return [row("definitions backup", state, f"timer active, newest export {_age(age)} old (allowed {_age(allowed)})")]


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(seconds, 0) / 60:.0f} min"


def cluster_rows(me: dict[str, Any], members: list[dict[str, Any]], nodes: list[str]) -> list[dict[str, str]]:
    """Membership from GET /api/nodes, this node's alarms and partitions from GET /api/nodes/<node>."""
    running = {m["name"] for m in members if m.get("running")}
    known = {m["name"] for m in members}
    rows = []
    missing = [n for n in nodes if n not in running]
    extra = sorted(known - set(nodes)) if nodes else []
    if missing:
        rows.append(row("cluster members", FAIL, f"not running in the cluster: {', '.join(missing)}"))
    elif extra:
        rows.append(row("cluster members", WARN, f"{len(running)} running; not in the inventory: {', '.join(extra)}"))
    else:
        rows.append(row("cluster members", OK, f"{len(running)} of {len(nodes) or len(running)} running"))
    alarms = [name for flag, name in (("mem_alarm", "memory"), ("disk_free_alarm", "disk")) if me.get(flag)]
    rows.append(row("alarms", FAIL if alarms else OK, f"{' and '.join(alarms)} alarm" if alarms else "none"))
    partitions = me.get("partitions") or []
    cut_off = f"cut off from {', '.join(partitions)}" if partitions else "none"
    rows.append(row("partitions", FAIL if partitions else OK, cut_off))
    return rows


def _describe_alarms(alarms: list[Any]) -> str:
    return "; ".join(json.dumps(a, sort_keys=True) if not isinstance(a, str) else a for a in alarms)


def feature_flag_rows(flags: list[dict[str, Any]]) -> list[dict[str, str]]:
    off = sorted(f["name"] for f in flags if f.get("stability") == "stable" and f.get("state") != "enabled")
    if off:
        return [row("feature flags", FAIL, f"stable flags disabled: {', '.join(off)}")]
    stable = sum(1 for f in flags if f.get("stability") == "stable")
    return [row("feature flags", OK, f"every stable flag enabled ({stable})")]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def certificate_row(not_after: str | None, min_days: int, now: float, path: str) -> dict[str, str]:
    if not_after is None:
        return row("certificate", FAIL, f"cannot read {path}")
    expires = datetime.strptime(not_after, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC).timestamp()
    days = (expires - now) / 86400
    state = OK if days >= min_days else FAIL
    return row("certificate", state, f"valid {days:.0f} more days (until {not_after}; at least {min_days} wanted)")


def effective_needs(needs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(vhost, queue) -> (owner, the x-arguments the queue must end up with: its own plus its policy's)."""
    wanted: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for need in needs:
        owner = str(need.get("owner") or "a dependent role")
        for queue in need.get("queues") or []:
            vhost = str(queue.get("vhost") or "/")
            arguments = {"x-queue-type": queue.get("type") or "quorum", **(queue.get("arguments") or {})}
            policies = [
                p for p in need.get("policies") or []
                if str(p.get("vhost") or "/") == vhost and re.search(p["pattern"], str(queue["name"]))
            ]  # fmt: skip
            if policies:
                policy = max(policies, key=lambda p: int(p.get("priority") or 0))
                arguments.update({f"x-{k}": _number(v) for k, v in policy["definition"].items()})
            wanted[(vhost, str(queue["name"]))] = (owner, arguments)
    return wanted


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else value


def queue_rows(queues: list[dict[str, Any]], needs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per queue other roles need: present, with the arguments they need (policies applied)."""
    found = {(q.get("vhost"), q.get("name")): q for q in queues}
    rows = []
    for (vhost, name), (owner, wanted) in effective_needs(needs).items():
        check = f"queue {vhost}/{name}"
        queue = found.get((vhost, name))
        if queue is None:
            rows.append(row(check, FAIL, f"missing ({owner} needs it)"))
            continue
        actual = {"x-queue-type": queue.get("type"), **(queue.get("arguments") or {})}
        actual.update({f"x-{k}": v for k, v in (queue.get("effective_policy_definition") or {}).items()})
        wrong = {k: (actual.get(k), v) for k, v in wanted.items() if actual.get(k) != v}
        if wrong:
            text = ", ".join(f"{k} is {got!r}, needs {want!r}" for k, (got, want) in sorted(wrong.items()))
            rows.append(row(check, FAIL, f"{text} ({owner}; policy {queue.get('policy') or 'none'})"))
        else:
            rows.append(row(check, OK, f"{queue.get('messages', 0)} messages, {queue.get('consumers', 0)} consumers"))
    return rows


def dead_letter_rows(queues: list[dict[str, Any]], dlqs: list[dict[str, Any]], limit: int) -> list[dict[str, str]]:
    found = {(q.get("vhost"), q.get("name")): q for q in queues}
    rows = []
    for dlq in dlqs:
        vhost, name = str(dlq.get("vhost") or "/"), str(dlq["name"])
        queue = found.get((vhost, name))
        if queue is None:
            continue  # reported as a missing queue
        depth = int(queue.get("messages") or 0)
        state = OK if depth <= limit else FAIL
        rows.append(row(f"dead letters {vhost}/{name}", state, f"{depth} messages (at most {limit} wanted)"))
    return rows


def undeclared_rows(definitions: dict[str, Any], declared: dict[str, Any]) -> list[dict[str, str]]:
    """Objects on the broker nobody declared (the inventory or a role): reported, not failed."""

    def named(items: list[Any]) -> set[tuple[str, str]]:
        return {(str(i.get("vhost") or "/"), str(i["name"])) for i in items or [] if isinstance(i, dict)}

    found: list[str] = []
    vhosts = set(declared.get("vhosts") or [])
    found += [f"vhost {v['name']}" for v in definitions.get("vhosts") or [] if v["name"] not in vhosts]
    users = set(declared.get("users") or [])
    found += [f"user {u['name']}" for u in definitions.get("users") or [] if u["name"] not in users]
    for kind in ("policies", "queues", "exchanges"):
        mine = named(declared.get(kind) or [])
        for item in definitions.get(kind) or []:
            key = (str(item.get("vhost") or "/"), str(item["name"]))
            if kind == "exchanges" and (key[1] == "" or key[1].startswith("amq.")):
                continue
            if kind == "queues" and (item.get("auto_delete") or item.get("exclusive") or not item.get("durable", True)):
                continue
            if key not in mine:
                found.append(f"{kind[:-1] if kind != 'policies' else 'policy'} {key[0]}/{key[1]}")
    if found:
        return [row("undeclared objects", WARN, f"not in the inventory: {', '.join(sorted(found))}")]
    return [row("undeclared objects", OK, "none")]


class Node:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.timeout = module.params["timeout"]
        self.env = {"TZ": "UTC", "LC_ALL": "C", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}

    def run(self, *argv: str) -> tuple[int, str, str]:
        return self.module.run_command(list(argv), environ_update=self.env)

    def api(self, path: str) -> Any:
        p = self.module.params
        req = request.Request(p["api_url"].rstrip("/") + path)  # noqa: S310 - the node's own API, http(s) only
        token = base64.b64encode(f"{p['login_user']}:{p['login_password']}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310 - as above
            return json.loads(response.read().decode())


def node_rows(node: Node, params: dict[str, Any], now: float) -> list[dict[str, str]]:
    try:
        overview = node.api("/api/overview")
        me = node.api("/api/nodes/" + quote(params["node"], safe=""))
    except (error.URLError, OSError, ValueError) as exc:
        rc, out, err = node.run("rabbitmq-diagnostics", "-q", "check_running")
        said = (err or out).strip().splitlines()
        return [row("running", FAIL, f"management API: {exc}; {said[-1] if said else f'check_running: exit {rc}'}")]
    if not me.get("running"):
        return [row("running", FAIL, f"{params['node']} is not running (management API)")]
    version = str(overview.get("rabbitmq_version", "?"))
    rows = [row("running", OK, f"RabbitMQ {version}, Erlang {overview.get('erlang_version', '?')}")]
    rows += cluster_rows(me, node.api("/api/nodes"), params["nodes"])
    rows += feature_flag_rows(node.api("/api/feature-flags"))
    if version_tuple(version) >= (3, 13):
        names = sorted(f.get("name", "?") for f in node.api("/api/deprecated-features/used") or [])
        rows.append(row("deprecated features", FAIL if names else OK, ", ".join(names) or "none in use"))
    else:
        rows.append(row("deprecated features", SKIP, f"not reported before RabbitMQ 3.13 ({version})"))
    if params["tls_certificate"]:
        path = params["tls_certificate"]
        not_after = None
        if os.path.isfile(path):
            not_after = ssl._ssl._test_decode_cert(path).get("notAfter")
        rows.append(certificate_row(not_after, params["tls_min_days"], now, path))
    if params["nofile_limit"]:
        rows.append(nofile_row(me.get("os_pid"), params["nofile_limit"]))
    rows += node_backup_rows(node, params, now)
    return rows


def nofile_row(pid: Any, wanted: int) -> dict[str, str]:
    try:
        limits = Path(f"/proc/{int(pid)}/limits").read_text()
    except (OSError, TypeError, ValueError):
        return row("file descriptors", FAIL, f"cannot read the limits of the node's process ({pid})")
    match = re.search(r"^Max open files\s+(\d+|unlimited)", limits, re.M)
    soft = match[1] if match else "?"
    if soft != "unlimited" and (not soft.isdigit() or int(soft) < wanted):
        why = f"the node may open {soft} files, configured {wanted} (a lower hard limit?)"
        return row("file descriptors", FAIL, why)
    return row("file descriptors", OK, f"limit {soft} (configured {wanted})")


def node_backup_rows(node: Node, params: dict[str, Any], now: float) -> list[dict[str, str]]:
    timer = params["backup_unit"] + ".timer"
    active = node.run("systemctl", "is-active", "--quiet", timer)[0] == 0
    show = dict(
        line.split("=", 1)
        for line in node.run("systemctl", "show", timer, "-p", "RandomizedDelayUSec", "-p", "ActiveEnterTimestamp",
                             "-p", "TimersCalendar")[1].splitlines()
        if "=" in line
    )  # fmt: skip
    schedule = re.search(r"OnCalendar=(.*?) ;", show.get("TimersCalendar", ""))
    period = None
    if schedule:
        period = calendar_period(node.run("systemd-analyze", "calendar", "--iterations=2", schedule[1].strip())[1])
    exports = sorted(Path(params["backup_dir"]).glob("definitions-*.json"), key=lambda p: p.stat().st_mtime)
    newest = exports[-1].stat().st_mtime if exports else None
    return backup_rows(
        enabled=params["backup_enabled"],
        timer_active=active,
        newest_export=newest,
        period=period,
        delay=parse_timespan(show.get("RandomizedDelayUSec", "0")),
        timer_since=systemd_timestamp(show.get("ActiveEnterTimestamp", "")),
        now=now,
    )


def cluster_check_rows(node: Node, params: dict[str, Any]) -> list[dict[str, str]]:
    definitions = node.api("/api/definitions")
    rows = []
    if params["remove_guest"]:
        guest = any(u.get("name") == "guest" for u in definitions.get("users") or [])
        rows.append(row("guest user", FAIL if guest else OK, "present" if guest else "absent"))
    columns = "name,vhost,type,arguments,policy,effective_policy_definition,messages,consumers,durable"
    queues = node.api("/api/queues?columns=" + quote(columns, safe=","))
    rows += queue_rows(queues, params["needs"])
    rows += dead_letter_rows(queues, params["dead_letter_queues"], params["dead_letters_max"])
    rows += undeclared_rows(definitions, params["declared"])
    return rows


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "node": {"type": "str", "required": True},
            "nodes": {"type": "list", "elements": "str", "default": []},
            "tls_certificate": {"type": "path", "default": ""},
            "tls_min_days": {"type": "int", "default": 30},
            "nofile_limit": {"type": "int", "default": 0},
            "backup_enabled": {"type": "bool", "default": True},
            "backup_dir": {"type": "path", "default": "/var/backups/rabbitmq"},
            "backup_unit": {"type": "str", "default": "rabbitmq-definitions-backup"},
            "cluster_checks": {"type": "bool", "default": False},
            "api_url": {"type": "str", "default": "http://127.0.0.1:15672"},
            "login_user": {"type": "str", "default": ""},
            "login_password": {"type": "str", "default": "", "no_log": True},
            "remove_guest": {"type": "bool", "default": True},
            "declared": {"type": "dict", "default": {}},
            "needs": {"type": "list", "elements": "dict", "default": []},
            "dead_letter_queues": {"type": "list", "elements": "dict", "default": []},
            "dead_letters_max": {"type": "int", "default": 0},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    if not module.params["api_url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"api_url must be an http:// or https:// URL, not {module.params['api_url']!r}")
    node = Node(module)
    now = time.time()
    try:
        rows = node_rows(node, module.params, now)
    except (error.URLError, OSError, ValueError) as exc:
        rows = [row("node state", FAIL, f"cannot read it: {exc}")]
    if module.params["cluster_checks"] and rows and rows[0]["state"] == OK:
        try:
            rows += cluster_check_rows(node, module.params)
        except (error.URLError, OSError, ValueError) as exc:
            rows.append(row("definitions", FAIL, f"management API: {exc}"))
    module.exit_json(changed=False, rows=rows)


if __name__ == "__main__":
    main()
