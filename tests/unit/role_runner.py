"""Runs a role against hosts that cannot be reached: what the negative tests of role variables
(test_argument_specs.py, test_tls_prechecks.py) share.

A batch is every case of one role in one ansible-playbook run: one inventory host per case, with the
case's variables as its host variables, all of them unreachable (a podman connection to a container
that does not exist), and one play of the role on all of them. Validation and the prechecks run on the
controller, each host on its own: a case that fails stops only its host, and the others go on. The
callback callback_plugins/case_results.py records per host what the play recap counts, the tasks that
went well and every failure (task name and error), so that each case is asserted on its own host's
results, as if it had run alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"

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


def broker(**changes: Any) -> dict[str, Any]:
    vars_ = {**BROKER_OK, **changes}
    return {k: v for k, v in vars_.items() if v is not None}


# Roles whose prechecks need no host (the worker's read the wheelhouse on the controller): their cases run
# with --tags <role>-prechecks, so that a control case gets through every precheck and stops there.
PRECHECKS_ONLY = {"worker"}
# Roles the playbooks run before these (the worker calls the runit role's modules).
RUN_AFTER = {"worker": ["runit"]}


def prechecks_only(role: str) -> list[str]:
    return ["--tags", f"{role}-prechecks"] if role in PRECHECKS_ONLY else []


def host_name(case: str) -> str:
    """The inventory host of a case: its name in lowercase letters, digits and dashes (a valid host
    name, so that rabbitmq_nodename's default rabbit@<host> is well formed)."""
    return re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")


@dataclass
class HostResult:
    """One case's host in a batch."""

    host: str
    recap: dict[str, int]
    ok: list[str]
    failed: list[dict[str, Any]]
    unreachable: list[dict[str, Any]]
    # The whole batch's stdout and stderr (the default callback's output, as a person would read it).
    output: str = field(repr=False)

    def errors(self) -> str:
        """What this host's failures say: each failed task's name, its error's messages and the result's
        msg and argument_errors (of every item of a loop), whitespace collapsed (messages wrap). Not the
        argument spec a failed validation's result carries: it names every variable of the role."""
        parts = [
            " ".join([f"{entry['task']}:", *entry["error"], *_messages(entry["result"])])
            for entry in self.failed + self.unreachable
        ]
        return " ".join("\n".join(parts).split())

    def everything(self) -> str:
        """All that was recorded of this host (for what must appear nowhere, such as a Traceback)."""
        return json.dumps({"ok": self.ok, "failed": self.failed, "unreachable": self.unreachable})

    def describe(self) -> str:
        """For assertion messages: this host's recap and failures, then its lines of the batch's output
        (the whole output is in output.txt beside the batch's inventory)."""
        lines, mine = [], False
        for line in self.output.splitlines():
            if re.match(r"\S", line):
                mine = f"[{self.host}]" in line or line.startswith(f"{self.host} ")
            if mine and line.strip():
                lines.append(line)
        return f"host {self.host}: {self.recap}\n{self.errors()}\n--- its output:\n" + "\n".join(lines)


def _messages(result: Any) -> list[str]:
    """The msg and argument_errors of a result and of its items, outermost first."""
    if isinstance(result, list):
        return [text for item in result for text in _messages(item)]
    if not isinstance(result, dict):
        return []
    found = [result["msg"]] if isinstance(result.get("msg"), str) else []
    found += [str(error) for error in result.get("argument_errors") or []]
    return found + _messages(result.get("results", []))


def run_cases(directory: Path, role: str, cases: dict[str, dict[str, Any]]) -> dict[str, HostResult]:
    """Runs `role` once for all `cases` (case -> its variables) and returns each case's host result.

    A case whose host is missing from the results (the run failed before the play) gets an empty
    recap, so that its assertions fail with the batch's output."""
    hosts = {case: host_name(case) for case in cases}
    assert len(set(hosts.values())) == len(hosts), f"two cases map to one host name: {hosts}"
    unreachable = {"ansible_connection": "containers.podman.podman", "ansible_host": "bundle-no-such-container"}
    inventory = directory / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"hosts": {hosts[case]: {**unreachable, **cases[case]} for case in cases}}})
    )
    playbook = directory / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": f"negative tests of the {role} role",
                    "hosts": "all",
                    "gather_facts": False,
                    "roles": [*({"role": r} for r in RUN_AFTER.get(role, [])), {"role": role}],
                }
            ]
        )
    )
    results = directory / "results.json"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "case_results",
        "CASE_RESULTS_FILE": str(results),
    }
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), *prechecks_only(role)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    output = f"$ ansible-playbook (exit {run.returncode})\n{run.stdout}{run.stderr}"
    (directory / "output.txt").write_text(output)
    per_host = json.loads(results.read_text()) if results.exists() else {}
    empty: dict[str, Any] = {"recap": {}, "ok": [], "failed": [], "unreachable": []}
    return {case: HostResult(host=host, output=output, **per_host.get(host, empty)) for case, host in hosts.items()}
