"""What the worker role declares on the brokers gives the worker's queues exactly the arguments the worker
itself would declare (account_worker.amqp.queue_arguments): rendered by Ansible from the role (entry point
broker_topology, no host needed), for the defaults and for another queue name and delivery limit. The
rabbitmq role's merge and conflict filters are tested beside it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from account_worker.amqp import queue_arguments
from account_worker.config import load_config

# Each test runs Ansible (directly or through a fixture): `make unit`, not `make check`.
pytestmark = pytest.mark.ansible

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
URL = "amqps://app:secret@mq1.example.com:5671/app"

CASES = {
    "defaults": ({}, {}),
    "orders": (
        {"worker_queue": "orders", "worker_delivery_limit": 7},
        {"WORKER_QUEUE": "orders", "WORKER_DELIVERY_LIMIT": "7"},
    ),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """worker_broker_topology as the role sets it, per case (one ansible-playbook run for all)."""
    tmp = tmp_path_factory.mktemp("topology")
    hosts = {
        name: {"ansible_connection": "local", "worker_amqp_urls": [URL], **role_vars}
        for name, (role_vars, _env) in CASES.items()
    }
    (tmp / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"workers": {"hosts": hosts}}}}))
    play = [
        {
            "hosts": "workers",
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.include_role": {"name": "worker", "tasks_from": "broker_topology"}},
                {
                    "ansible.builtin.copy": {
                        "content": "{{ worker_broker_topology | to_json }}",
                        "dest": str(tmp) + "/{{ inventory_hostname }}.json",
                        "mode": "0600",
                    },
                    "delegate_to": "localhost",
                },
            ],
        }
    ]
    (tmp / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in CASES}


def effective_arguments(topology: dict[str, Any], queue: str) -> dict[str, Any]:
    """A queue's x-arguments as the broker applies them: its own, plus the highest-priority policy matching it."""
    declared = next(q for q in topology["queues"] if q["name"] == queue)
    arguments = {"x-queue-type": declared.get("type", "quorum"), **declared.get("arguments", {})}
    matching = [p for p in topology["policies"] if re.search(p["pattern"], queue) and p["vhost"] == declared["vhost"]]
    if matching:
        policy = max(matching, key=lambda p: p.get("priority", 0))
        arguments.update({f"x-{key}": value for key, value in policy["definition"].items()})
    return arguments


@pytest.mark.parametrize("case", CASES)
def test_declared_queues_get_the_arguments_the_worker_needs(rendered, case):
    _role_vars, worker_env = CASES[case]
    cfg = load_config({"WORKER_AMQP_URLS": URL, "WORKER_DATABASE_URL": "postgresql://u:p@db/a", **worker_env})
    topology = rendered[case]
    wanted = queue_arguments(cfg)
    assert {q["name"] for q in topology["queues"]} == set(wanted)
    for queue, arguments in wanted.items():
        assert effective_arguments(topology, queue) == arguments, queue
    assert {q["vhost"] for q in topology["queues"]} == {"app"}


@pytest.mark.parametrize("case", CASES)
def test_dead_letters_and_jobs_are_routed(rendered, case):
    _role_vars, worker_env = CASES[case]
    cfg = load_config({"WORKER_AMQP_URLS": URL, "WORKER_DATABASE_URL": "postgresql://u:p@db/a", **worker_env})
    topology = rendered[case]
    exchanges = {e["name"]: e["type"] for e in topology["exchanges"]}
    assert exchanges == {cfg.dead_letter_exchange: "fanout", cfg.queue: "direct"}
    bindings = {(b["source"], b["destination"], b.get("routing_key")) for b in topology["bindings"]}
    assert bindings == {(cfg.dead_letter_exchange, cfg.dead_letter_queue, None), (cfg.queue, cfg.queue, cfg.queue)}


def _filters():
    path = ROOT / "collections/ansible_collections/bundle/ops/plugins/filter/rabbitmq_dependent.py"
    spec = importlib.util.spec_from_file_location("rabbitmq_dependent", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merge_declares_each_object_once(rendered):
    f = _filters()
    topology = rendered["defaults"]
    mine = [{"name": "audit", "vhost": "app"}, topology["queues"][0]]
    merged = f.rabbitmq_merge_dependent(mine, [topology, topology], "queues")
    assert [q["name"] for q in merged] == ["audit", "jobs", "jobs.retry", "jobs.dlq"]


def test_no_conflict_when_the_inventory_leaves_the_workers_objects_alone(rendered):
    f = _filters()
    user = {
        "queues": [{"name": "audit", "vhost": "app"}],
        "policies": [
            {"name": "catch-all", "vhost": "app", "pattern": ".*", "definition": {"max-length": 10}},
            {"name": "other-vhost", "vhost": "/", "pattern": ".*", "priority": 99, "definition": {"max-length": 1}},
        ],
    }
    assert f.rabbitmq_dependent_conflicts(user, [rendered["defaults"]]) == []


@pytest.mark.parametrize(
    ("user", "named"),
    [
        ({"queues": [{"name": "jobs", "vhost": "app", "type": "classic"}]}, "queue jobs in vhost app"),
        (
            {"policies": [{"name": "jobs-dead-letter", "vhost": "app", "pattern": "^jobs$", "definition": {}}]},
            "policy jobs-dead-letter in vhost app",
        ),
        (
            {
                "policies": [
                    {
                        "name": "ttl",
                        "vhost": "app",
                        "pattern": "^jobs",
                        "priority": 10,
                        "definition": {"message-ttl": 60000},
                    }
                ]
            },
            "policy ttl in vhost app (priority 10) matches jobs",
        ),
        (
            {
                "policies": [
                    {
                        "name": "limit",
                        "vhost": "app",
                        "pattern": "^jobs$",
                        "priority": 20,
                        "apply_to": "all",
                        "definition": {"dead-letter-exchange": "jobs.dlx", "delivery-limit": 10},
                    }
                ]
            },
            "losing {'dead-letter-strategy'",
        ),
    ],
    ids=["queue of another type", "same policy, other values", "higher priority policy", "weaker delivery limit"],
)
def test_conflicts_name_the_object(rendered, user, named):
    problems = _filters().rabbitmq_dependent_conflicts(user, [rendered["defaults"]])
    assert len(problems) == 1 and named in problems[0], problems


def test_a_superset_policy_of_higher_priority_is_accepted(rendered):
    wanted = next(p for p in rendered["defaults"]["policies"])["definition"]
    user = {
        "policies": [
            {
                "name": "strict",
                "vhost": "app",
                "pattern": "^jobs$",
                "priority": 50,
                "definition": {**wanted, "max-length": 100000},
            }
        ]
    }
    assert _filters().rabbitmq_dependent_conflicts(user, [rendered["defaults"]]) == []


def test_two_workers_that_disagree_conflict(rendered):
    other = json.loads(json.dumps(rendered["defaults"]))
    other["owner"] = "worker elsewhere"
    other["policies"][0]["definition"]["delivery-limit"] = 20
    problems = _filters().rabbitmq_dependent_conflicts({}, [rendered["defaults"], other])
    assert problems and "worker elsewhere" in problems[0]
