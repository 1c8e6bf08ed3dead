"""The management HTTP API, as the administrator."""

from __future__ import annotations


def test_overview(management) -> None:
    overview = management.json("overview")
    assert overview["rabbitmq_version"]
    assert overview["management_version"]
    assert overview["node"].startswith("rabbit@")


def test_whoami_is_administrator(management, target) -> None:
    me = management.json("whoami")
    assert me["name"] == target.admin_user
    tags = me["tags"] if isinstance(me["tags"], list) else me["tags"].split(",")
    assert "administrator" in tags


def test_nodes_running_without_alarms(management) -> None:
    nodes = management.json("nodes")
    assert nodes
    for node in nodes:
        assert node["running"], f"{node['name']} is not running"
        assert not node.get("mem_alarm"), f"{node['name']} has a memory alarm"
        assert not node.get("disk_free_alarm"), f"{node['name']} has a disk alarm"


def test_guest_is_refused(anonymous_management) -> None:
    response = anonymous_management("guest", "guest").get("whoami")
    assert response.status_code == 401


def test_configured_vhosts_users_queues_exist(management, target) -> None:
    vhosts = {v["name"] for v in management.json("vhosts")}
    assert set(target.expect_vhosts) <= vhosts
    users = {u["name"] for u in management.json("users")}
    assert set(target.expect_users) <= users
    assert "guest" not in users
    queues = {(q["vhost"], q["name"]) for q in management.json("queues")}
    missing = set(target.expect_queues) - queues
    assert not missing, f"queues missing: {sorted(missing)}"


def test_app_user_permissions(management, target) -> None:
    perms = management.json(f"users/{target.user}/permissions")
    assert any(p["vhost"] == target.vhost for p in perms), f"{target.user} has no permission on {target.vhost}"
