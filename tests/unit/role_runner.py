"""Runs one role against a host that cannot be reached: what the negative tests of
role variables (test_argument_specs.py, test_tls_prechecks.py) share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

BROKER_OK = {
    "rabbitmq_admin_password": "a-long-test-password",
    "rabbitmq_vhosts": ["/", "app"],
    "rabbitmq_users": [
        {
            "name": "app",
            "password": "another-password",
            "permissions": [{"vhost": "app", "configure_priv": ".*", "write_priv": ".*", "read_priv": ".*"}],
        }
    ],
}


def broker(**changes):
    vars_ = {**BROKER_OK, **changes}
    return {k: v for k, v in vars_.items() if v is not None}


# Roles whose prechecks need no host (the worker's read the wheelhouse on the controller): their cases run
# with --tags <role>-prechecks, so that a control case gets through every precheck and stops there.
PRECHECKS_ONLY = {"worker"}
# Roles the playbooks run before these (the worker calls the runit role's modules).
RUN_AFTER = {"worker": ["runit"]}


def prechecks_only(role: str) -> list[str]:
    return ["--tags", f"{role}-prechecks"] if role in PRECHECKS_ONLY else []


def run_role(tmp_path: Path, role: str, role_vars: dict) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "unreachable-host": {
                            "ansible_connection": "containers.podman.podman",
                            "ansible_host": "bundle-no-such-container",
                        }
                    }
                }
            }
        )
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "negative test",
                    "hosts": "all",
                    "gather_facts": False,
                    "roles": [*({"role": r} for r in RUN_AFTER.get(role, [])), {"role": role, "vars": role_vars}],
                }
            ]
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), *prechecks_only(role)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
