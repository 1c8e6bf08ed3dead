"""What adding or removing a cluster node means for the queues (playbooks/cluster-add-node.yml,
cluster-remove-node.yml).

Inputs are what `rabbitmqctl --formatter json list_queues name type members pid` prints, per vhost, as the
playbooks register it (a loop's `results`: each item's `item` is the vhost, its `stdout` the JSON), and what
`rabbitmq-queues --formatter json quorum_status` prints for one queue.

- `rabbitmq_queue_listing(results)`: one flat list of {vhost, name, type, members, online, home}; `home` is the node of
  the queue's process (a classic queue lives there only).
- `rabbitmq_removal_plan(queues, node, remaining)`: for the node leaving, the quorum queues with a member on it,
  a replacement member for each on a remaining node that has none yet (so the replication factor does not drop
  where the cluster has room), and what removal would lose: classic queues homed on the node and streams with a
  replica on it (neither moves by itself); `refusal` says so in one sentence, empty when nothing is lost.
- `rabbitmq_queues_without_member(queues, node, vhost_pattern, queue_pattern)`: quorum queues matching the
  patterns with no member on the node, as {vhost, name} (what `rabbitmq-queues grow` adds; a pattern matches
  anywhere in the name, as RabbitMQ's does).
- `rabbitmq_queues_without_majority(queues)`: quorum queues with no majority of their members online.
- `rabbitmq_member_caught_up(status, node, slack=100)`: whether the node's member of one quorum queue has caught up
  with the leader. RabbitMQ 4.0+ adds a member as a non-voter and promotes it to voter once it has caught up, and
  says so (`Membership`): a voter following the leader has caught up. Before 4.0 (no `Membership`), the member has
  applied its log to within `slack` entries of the leader's commit index (the two are read one after the other,
  so under load they are never exactly equal).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ansible.errors import AnsibleFilterError

# A pid as the JSON formatter prints it: <rabbit@host.1234.0>
_PID = re.compile(r"^<(?P<node>[^<>]+@[^<>]+?)\.\d+\.\d+>$")


def _home(pid: Any) -> str:
    match = _PID.match(str(pid or ""))
    return match["node"] if match else ""


def rabbitmq_queue_listing(results: Any) -> list[dict[str, Any]]:
    queues: list[dict[str, Any]] = []
    for result in results or []:
        vhost = result.get("item")
        try:
            rows = json.loads(result.get("stdout") or "[]")
        except ValueError as exc:
            raise AnsibleFilterError(f"list_queues of vhost {vhost!r} printed no JSON: {exc}") from exc
        for row in rows:
            members, online = row.get("members") or [], row.get("online") or []
            queues.append(
                {
                    "vhost": vhost,
                    "name": row["name"],
                    "type": row.get("type", "classic"),
                    "members": list(members) if isinstance(members, list) else [],
                    "online": list(online) if isinstance(online, list) else [],
                    "home": _home(row.get("pid")),
                }
            )
    return queues


def _label(queue: dict[str, Any]) -> str:
    return f"{queue['vhost']}/{queue['name']}"


def rabbitmq_removal_plan(queues: list[dict[str, Any]], node: str, remaining: list[str]) -> dict[str, Any]:
    quorum = [q for q in queues if q["type"] == "quorum" and node in q["members"]]
    add = []
    for queue in quorum:
        spare = [n for n in remaining if n not in queue["members"]]
        if spare:
            add.append({"vhost": queue["vhost"], "name": queue["name"], "node": spare[0]})
    classic = [_label(q) for q in queues if q["type"] == "classic" and q["home"] == node]
    streams = [_label(q) for q in queues if q["type"] == "stream" and node in q["members"]]
    reasons = []
    if classic:
        reasons.append(
            f"classic queues live on {node} only and would be deleted with it: {', '.join(classic)} "
            "(move their messages, e.g. with a shovel, and delete them first)"
        )
    if streams:
        reasons.append(
            f"streams have a replica on {node}: {', '.join(streams)} (add a replica elsewhere with "
            f"rabbitmq-streams add_replica, then rabbitmq-streams delete_replica ... {node})"
        )
    return {
        "quorum": [_label(q) for q in quorum],
        "add": add,
        "classic": classic,
        "streams": streams,
        "refusal": "; ".join(reasons),
    }


def rabbitmq_queues_without_member(
    queues: list[dict[str, Any]], node: str, vhost_pattern: str = ".*", queue_pattern: str = ".*"
) -> list[dict[str, str]]:
    try:
        vhosts, names = re.compile(vhost_pattern), re.compile(queue_pattern)
    except re.error as exc:
        raise AnsibleFilterError(f"not a regular expression: {exc}") from exc
    return [
        {"vhost": q["vhost"], "name": q["name"]}
        for q in queues
        if q["type"] == "quorum"
        and node not in q["members"]
        and vhosts.search(str(q["vhost"]))
        and names.search(str(q["name"]))
    ]


def rabbitmq_queues_without_majority(queues: list[dict[str, Any]]) -> list[str]:
    return [
        f"{_label(q)} ({len(q['online'])} of {len(q['members'])} members online)"
        for q in queues
        if q["type"] == "quorum" and len(q["online"]) <= len(q["members"]) // 2
    ]


def _number(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if isinstance(value, int) or str(value).isdigit() else -1


def rabbitmq_member_caught_up(status: Any, node: str, slack: int = 100) -> bool:
    rows = json.loads(status) if isinstance(status, str) else status
    mine = [r for r in rows or [] if r.get("Node Name") == node]
    leaders = [r for r in rows or [] if r.get("Raft State") == "leader"]
    if not mine or not leaders:
        return False
    member, leader = mine[0], leaders[0]
    if member.get("Raft State") not in ("leader", "follower"):
        return False
    if "Membership" in member:
        return bool(member["Membership"] == "voter")
    commit = _number(leader, "Commit Index")
    return commit >= 0 and _number(member, "Last Applied") >= commit - slack


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_queue_listing": rabbitmq_queue_listing,
            "rabbitmq_removal_plan": rabbitmq_removal_plan,
            "rabbitmq_queues_without_member": rabbitmq_queues_without_member,
            "rabbitmq_queues_without_majority": rabbitmq_queues_without_majority,
            "rabbitmq_member_caught_up": rabbitmq_member_caught_up,
        }
