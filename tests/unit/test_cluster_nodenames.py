"""The cluster's node names (_rabbitmq_cluster_nodenames in roles/rabbitmq/vars/main.yml), which the prechecks
and the doctor read: each node's own fact where it set one, else what the inventory gives a node outside the run
(--limit, or one that failed earlier): its rabbitmq_nodename, else rabbit@<short host name>."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ansible

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def node_names(tmp_path: Path, with_fact: list[str], limit: str | None = None) -> list[str]:
    inventory = {
        "all": {
            "children": {
                "brokers": {
                    "hosts": {
                        "mq1.example.net": {},
                        "mq2": {"rabbitmq_nodename": "rabbit@custom2"},
                        "mq3.example.net": {},
                    }
                }
            },
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        }
    }
    out = tmp_path / "names.json"
    play = [
        {
            "hosts": "brokers",
            "gather_facts": False,
            "vars_files": [str(ROOT / "roles" / "rabbitmq" / "vars" / "main.yml")],
            "vars": {"rabbitmq_cluster_nodes": "{{ groups['brokers'] }}"},
            "tasks": [
                {
                    "name": "Set the fact as the role's prechecks do",
                    "ansible.builtin.set_fact": {"_rabbitmq_node": "rabbit@fact-{{ inventory_hostname_short }}"},
                    "when": f"inventory_hostname in {with_fact!r}",
                },
                {
                    "name": "Write the names",
                    "ansible.builtin.copy": {
                        "content": "{{ _rabbitmq_cluster_nodenames | to_json }}",
                        "dest": str(out),
                    },
                    "run_once": True,
                },
            ],
        }
    ]
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "ANSIBLE_STRATEGY": "linear", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")]
    if limit:
        args += ["--limit", limit]
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    names: list[str] = json.loads(out.read_text(encoding="utf-8"))
    return names


def test_the_nodes_own_facts_come_first(tmp_path: Path) -> None:
    hosts = ["mq1.example.net", "mq2", "mq3.example.net"]
    assert node_names(tmp_path, hosts) == ["rabbit@fact-mq1", "rabbit@fact-mq2", "rabbit@fact-mq3"]


def test_a_node_outside_the_run_is_named_as_the_inventory_names_it(tmp_path: Path) -> None:
    # --limit to one node: the others never set the fact (before, this stopped the run with an undefined value).
    names = node_names(tmp_path, ["mq3.example.net"], limit="mq3.example.net")
    assert names == ["rabbit@mq1", "rabbit@custom2", "rabbit@fact-mq3"]
