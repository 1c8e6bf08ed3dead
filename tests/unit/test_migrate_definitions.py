"""playbooks/migrate.yml's definitions delta: what green lacks of blue, made valid for green."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_path = (
    Path(__file__).resolve().parents[2]
    / "collections/ansible_collections/bundle/ops/plugins/filter/migrate_definitions.py"
)
_spec = importlib.util.spec_from_file_location("migrate_definitions", _path)
assert _spec and _spec.loader
migrate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(migrate)

HASH = "rabbit_password_hashing_sha256"
BLUE = {
    "vhosts": [{"name": "/"}, {"name": "app"}, {"name": "reports"}],
    "users": [
        {"name": "admin", "password_hash": "A1", "hashing_algorithm": HASH, "tags": ["administrator"]},
        {"name": "app", "password_hash": "B1", "hashing_algorithm": HASH, "tags": []},
        {"name": "legacy", "password_hash": "C1", "hashing_algorithm": HASH, "tags": ["management"]},
    ],
    "permissions": [{"user": "legacy", "vhost": "reports", "configure": ".*", "write": ".*", "read": ".*"}],
    "exchanges": [{"name": "jobs", "vhost": "app", "type": "direct", "durable": True, "arguments": {}}],
    "queues": [
        {"name": "jobs", "vhost": "app", "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "quorum"}},
        {"name": "mirrored.orders", "vhost": "reports", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "plain", "vhost": "reports", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "scratch", "vhost": "reports", "durable": False, "auto_delete": True, "arguments": {}},
    ],
    "bindings": [
        {"source": "jobs", "vhost": "app", "destination": "jobs", "destination_type": "queue", "routing_key": "jobs",
         "arguments": {}},
    ],
    "policies": [
        {"vhost": "reports", "name": "ha", "pattern": "^mirrored\\.", "apply-to": "queues", "priority": 0,
         "definition": {"ha-mode": "all"}},
        {"vhost": "reports", "name": "ttl-ha", "pattern": "^x", "apply-to": "queues", "priority": 0,
         "definition": {"ha-mode": "all", "message-ttl": 5}},
    ],
    "parameters": [{"vhost": "app", "component": "shovel", "name": "migrate-jobs", "value": {}}],
}  # fmt: skip


def delta(green: dict, version: str = "4.0.5") -> dict:
    return migrate.migrate_definitions_delta(BLUE, green, version, ["admin"])


def test_an_empty_green_gets_everything_but_its_admin_and_the_shovels() -> None:
    result = delta({})
    got = result["import"]
    assert [v["name"] for v in got["vhosts"]] == ["/", "app", "reports"]
    assert [u["name"] for u in got["users"]] == ["app", "legacy"]
    assert got["users"][1]["password_hash"] == "C1" and got["users"][1]["hashing_algorithm"] == HASH
    assert "parameters" not in got


def test_rabbitmq_4_gets_quorum_queues_for_mirrored_ones_and_no_mirroring_keys() -> None:
    got = delta({})["import"]
    queues = {q["name"]: q for q in got["queues"]}
    assert queues["mirrored.orders"]["arguments"]["x-queue-type"] == "quorum"
    assert queues["plain"]["arguments"] == {}
    assert [p["name"] for p in got["policies"]] == ["ttl-ha"]
    assert got["policies"][0]["definition"] == {"message-ttl": 5}


def test_rabbitmq_3_keeps_them() -> None:
    got = delta({}, "3.13.7")["import"]
    assert {q["name"]: q for q in got["queues"]}["mirrored.orders"]["arguments"] == {}
    assert len(got["policies"]) == 2


def test_a_green_that_has_it_all_gets_nothing() -> None:
    green = copy.deepcopy(BLUE)
    green["users"][0]["password_hash"] = "other admin"
    green["queues"][1]["arguments"] = {"x-queue-type": "quorum"}
    green["policies"] = [{**BLUE["policies"][1], "definition": {"message-ttl": 5}}]
    result = delta(green)
    assert result["import"] == {} and result["plan"] == ["policy reports/ha not copied (only classic mirroring)"]
    assert result["conflicts"] == []


def test_a_user_whose_hash_differs_is_copied_with_blues_hash() -> None:
    green = copy.deepcopy(BLUE)
    green["users"][1]["password_hash"] = "B2"
    assert delta(green)["import"]["users"] == [BLUE["users"][1]]


def test_a_queue_of_another_type_on_green_is_a_conflict_not_an_import() -> None:
    green = copy.deepcopy(BLUE)
    green["queues"][0]["arguments"] = {"x-queue-type": "classic"}
    result = delta(green)
    assert not any(q["name"] == "jobs" for q in result["import"].get("queues", []))
    assert any("app/jobs" in c for c in result["conflicts"])


def test_the_shovelled_queues_are_the_durable_ones() -> None:
    assert migrate.migrate_queue_names(BLUE) == [
        {"vhost": "app", "name": "jobs"},
        {"vhost": "reports", "name": "mirrored.orders"},
        {"vhost": "reports", "name": "plain"},
    ]


def test_a_client_is_described_with_its_name() -> None:
    conn = {"user": "app", "peer_host": "10.0.0.5", "peer_port": 4711, "client_properties": {"connection_name": "pub"}}
    assert migrate.migrate_describe_client(conn) == "app from 10.0.0.5:4711 (pub)"


def test_tags_as_a_string_or_a_list_are_the_same_tags() -> None:
    green = copy.deepcopy(BLUE)
    green["users"][2]["tags"] = "management"
    assert "users" not in delta(green)["import"]


def test_the_shovel_plan_moves_every_queue_to_the_same_queue_on_green_acknowledged_on_confirm() -> None:
    queues = [{"vhost": "app", "name": "jobs"}, {"vhost": "/", "name": "events"}, {"vhost": "a/b", "name": "q"}]
    plan = migrate.migrate_shovel_plan(queues, [], "amqp://admin:pw@green1:5672/")
    assert [s["key"] for s in plan["shovels"]] == ["app|migrate-jobs", "/|migrate-events", "a/b|migrate-q"]
    assert plan["start"] == plan["shovels"]
    jobs = plan["shovels"][0]["value"]
    assert (jobs["src-uri"], jobs["dest-uri"]) == ("amqp:///app", "amqp://admin:pw@green1:5672/app")
    assert (jobs["src-queue"], jobs["dest-queue"], jobs["ack-mode"]) == ("jobs", "jobs", "on-confirm")
    assert jobs["src-delete-after"] == "never" and jobs["dest-add-forward-headers"] is False
    # The default vhost and a vhost with a slash are percent-encoded in the URIs.
    assert plan["shovels"][1]["value"]["src-uri"] == "amqp:///%2F"
    assert plan["shovels"][2]["value"]["dest-uri"].endswith(":5672/a%2Fb")


def test_the_shovel_plan_starts_only_the_shovels_not_running_yet() -> None:
    queues = [{"vhost": "app", "name": "jobs"}, {"vhost": "app", "name": "jobs.dlq"}]
    existing = [{"vhost": "app", "name": "migrate-jobs"}, {"vhost": "app", "name": "someone-elses"}]
    plan = migrate.migrate_shovel_plan(queues, existing, "amqp://a:b@g:5672/")
    assert [s["name"] for s in plan["shovels"]] == ["migrate-jobs", "migrate-jobs.dlq"]
    assert [s["name"] for s in plan["start"]] == ["migrate-jobs.dlq"]


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"migrate_drain_timeout": "soon"}, "migrate_drain_timeout"),
        ({"migrate_amqp_port": 70000}, "migrate_amqp_port"),
        ({"migrate_green_group": "blue"}, "migrate_green_group"),
    ],
    ids=["timeout not a number", "port out of range", "green is blue"],
)
def test_bad_migrate_variables_fail_before_anything_is_read(tmp_path: Path, bad: dict, named: str) -> None:
    """The role's argument specs and prechecks refuse them on the controller: the brokers (unreachable
    here) are never asked."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n"
        "    blue: {hosts: {blue1: {ansible_host: 192.0.2.1}}}\n"
        "    green: {hosts: {green1: {ansible_host: 192.0.2.2}}}\n"
    )
    (tmp_path / "extra.json").write_text(json.dumps(bad))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(tmp_path / "hosts.yml"),
         "-e", f"@{tmp_path / 'extra.json'}", str(root / "playbooks" / "migrate.yml")],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert run.returncode != 0
    assert named in run.stdout, run.stdout[-2000:]
    assert "unreachable=1" not in run.stdout, "a broker was contacted before the variables were checked"


def test_shovels_to_a_tls_green_keep_their_query_after_the_vhost() -> None:
    queues = [{"vhost": "app", "name": "jobs"}, {"vhost": "/", "name": "other"}]
    uri = "amqps://admin:pw@green1:5671/?cacertfile=/etc/rabbitmq/migrate-green-ca.pem&verify=verify_peer"
    plan = migrate.migrate_shovel_plan(queues, [], uri)
    dest = [s["value"]["dest-uri"] for s in plan["shovels"]]
    assert dest == [
        "amqps://admin:pw@green1:5671/app?cacertfile=/etc/rabbitmq/migrate-green-ca.pem&verify=verify_peer",
        "amqps://admin:pw@green1:5671/%2F?cacertfile=/etc/rabbitmq/migrate-green-ca.pem&verify=verify_peer",
    ]
