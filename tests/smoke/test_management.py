"""The management HTTP API, as the administrator."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from smoke_management import Management, q
from smoke_settings import NAME_PREFIX, Target


def test_overview(management: Management) -> None:
    overview = management.json("overview")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", overview["rabbitmq_version"])
    assert overview["management_version"]
    assert overview["node"].startswith("rabbit@")
    assert overview["erlang_version"]


def test_whoami_is_administrator(management: Management, target: Target) -> None:
    me = management.json("whoami")
    assert me["name"] == target.admin_user
    tags = me["tags"] if isinstance(me["tags"], list) else me["tags"].split(",")
    assert "administrator" in tags


def test_nodes_running_without_alarms(management: Management) -> None:
    nodes = management.json("nodes")
    assert nodes, "no nodes listed"
    for node in nodes:
        assert node["running"], f"{node['name']} is not running"
        assert not node.get("mem_alarm"), f"{node['name']} has a memory alarm"
        assert not node.get("disk_free_alarm"), f"{node['name']} has a disk alarm"
        assert not node.get("partitions"), f"{node['name']} sees a network partition: {node['partitions']}"
    health = management.get("health/checks/alarms")
    assert health.status_code == 200, f"alarm health check: HTTP {health.status_code} {health.text[:200]}"


def test_guest_is_refused(anonymous_management: Callable[[str, str], Management]) -> None:
    response = anonymous_management("guest", "guest").get("whoami")
    assert response.status_code == 401


def test_configured_vhosts_exist(management: Management, target: Target) -> None:
    vhosts = {v["name"] for v in management.json("vhosts", columns="name")}
    missing = sorted(set(target.expect_vhosts) - vhosts)
    assert not missing, f"vhosts missing: {missing}"


def test_configured_users_exist(management: Management, target: Target) -> None:
    users = {u["name"] for u in management.json("users", columns="name")}
    missing = sorted(set(target.expect_users) - users)
    assert not missing, f"users missing: {missing}"
    assert "guest" not in users, "the default guest user still exists"


def test_configured_queues_exist(management: Management, target: Target) -> None:
    missing = []
    for vhost, queue in target.expect_queues:
        response = management.get(f"queues/{q(vhost)}/{q(queue)}", columns="name")
        if response.status_code == 404:
            missing.append(f"{vhost}:{queue}")
        else:
            assert response.status_code == 200, f"queue {vhost}:{queue}: HTTP {response.status_code}"
    assert not missing, f"queues missing: {missing}"


def test_app_user_permissions(management: Management, target: Target) -> None:
    """The AMQP user may configure, write and read in its vhost, at least what
    the AMQP tests need."""
    perms: list[dict[str, Any]] = management.json(f"users/{q(target.user)}/permissions")
    mine = [p for p in perms if p["vhost"] == target.vhost]
    assert mine, f"user {target.user!r} has no permissions on vhost {target.vhost!r}"
    sample = f"{NAME_PREFIX}0000-x"
    # RabbitMQ matches permission patterns unanchored; publishing to the default
    # exchange needs write on "amq.default".
    needs = {"configure": [sample], "write": [sample, "amq.default"], "read": [sample]}
    for kind, resources in needs.items():
        pattern = mine[0][kind]
        for resource in resources:
            assert pattern and re.search(pattern, resource), (
                f"user {target.user!r} may not {kind} {resource!r} on {target.vhost!r} (pattern {pattern!r})"
            )
