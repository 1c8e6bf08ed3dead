"""Every playbook parses against both inventories; the example inventory is production-shaped."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import ansible.collections.list as collection_listing
import ansible_mitogen.planner
import pytest

# Each test runs Ansible (directly or through a fixture): `make unit`, not `make check`.
pytestmark = pytest.mark.ansible

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = ["site.yml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").glob("*.yml"))]


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("inventory", ["inventory/sandbox", "inventory/example"])
def test_syntax(inventory: str) -> None:
    result = ansible("ansible-playbook", "--syntax-check", "-i", inventory, *PLAYBOOKS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(PLAYBOOKS) >= 7


def test_example_inventory_groups() -> None:
    result = ansible("ansible-inventory", "-i", "inventory/example", "--graph")
    assert result.returncode == 0, result.stderr
    for group in ("@brokers", "@rabbitmq_cluster", "@workers"):
        assert group in result.stdout
    assert "@databases" not in result.stdout, "production brings its own database"


def test_the_strategy_leaves_the_cpus_to_the_kernel(tmp_path: Path) -> None:
    """ansible.cfg's Mitogen strategy must not pin what a playbook starts: with Mitogen's own CPU policy, on
    a controller with two or three CPUs, every command (and the containers `molecule create` and
    playbooks/sandbox.yml start) ran confined to one CPU."""
    (tmp_path / "empty.yml").write_text("{}\n")  # the controller as the implicit localhost, as the bundle uses it
    playbook = tmp_path / "affinity.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: grep Cpus_allowed_list /proc/self/status\n"
        "      changed_when: false\n      register: status\n"
        '    - ansible.builtin.debug:\n        msg: "CPUS={{ status.stdout.split() | last }}."\n'
    )
    result = ansible("ansible-playbook", "-i", str(tmp_path / "empty.yml"), str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr
    status = Path("/proc/self/status").read_text().splitlines()
    mine = next(line for line in status if line.startswith("Cpus_allowed_list"))
    assert f"CPUS={mine.split()[-1]}." in result.stdout, (
        f"the task's CPUs differ from the controller's ({mine}):\n{result.stdout}"
    )


def test_the_strategy_lists_the_collections_once_and_hands_every_module_the_same_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mitogen listed every installed collection for each collection module's task (about 1.8 s of a re-run
    of site.yml); the strategy plugin lists them once, before the workers fork, and gives each task the
    directories Mitogen's own listing gives."""
    spec = importlib.util.spec_from_file_location("bundle_mitogen_linear", ROOT / "plugins/strategy/mitogen_linear.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert ansible_mitogen.planner._load_collections is plugin.load_collections
    # The pinned Mitogen looks the function up by name at each module's first use (a newer one may not).
    assert "_load_collections(invocation)" in inspect.getsource(ansible_mitogen.planner.invoke)

    listed: list[int] = []

    def list_collection_dirs() -> list[bytes]:
        listed.append(1)
        return [b"/one/ansible_collections/ns/a", b"/two/ansible_collections/ns/b"]

    monkeypatch.setattr(collection_listing, "list_collection_dirs", list_collection_dirs)
    plugin.collection_dirs.cache_clear()
    tasks = [types.SimpleNamespace(_extra_sys_paths=set()) for _ in range(3)]
    for task in tasks:
        plugin.load_collections(task)
    assert len(listed) == 1
    for task in tasks:
        assert task._extra_sys_paths == {"/one/ansible_collections/ns/a", "/two/ansible_collections/ns/b"}
    plugin.collection_dirs.cache_clear()
