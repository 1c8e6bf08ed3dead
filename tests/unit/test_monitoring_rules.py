"""Every alert of the monitoring role has promtool unit tests: a case where it fires and one where it
does not (the tests themselves run with promtool on the monitoring host, at converge). The rules render
through Ansible from monitoring_rules, an inventory's keys over the role's defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
RULES = sorted((ROLE / "templates").glob("*.rules.yml.j2"))
TESTS = sorted((ROLE / "files" / "rule-tests").glob("*.test.yml"))


def alerts() -> set[str]:
    return {name for path in RULES for name in re.findall(r"^\s*- alert: (\w+)$", path.read_text(), flags=re.M)}


def cases() -> list[dict]:
    found = []
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            found.extend(test.get("alert_rule_test", []))
    return found


def test_the_rules_define_the_broker_and_worker_alerts() -> None:
    assert len(alerts()) >= 15, alerts()
    assert {"WorkerInstanceDown", "WorkerCrashLooping", "WorkerDeadLettering"} <= alerts()
    assert {"WorkerNoSuccessfulJob", "WorkerDatabaseUnreachable"} <= alerts()


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing = {c["alertname"] for c in cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases() if not c.get("exp_alerts")}
    assert not alerts() - firing, f"alerts never tested firing: {sorted(alerts() - firing)}"
    assert not alerts() - quiet, f"alerts never tested quiet: {sorted(alerts() - quiet)}"


def test_tests_name_only_existing_alerts() -> None:
    unknown = {c["alertname"] for c in cases()} - alerts()
    assert not unknown, f"tests of alerts the rules do not define: {sorted(unknown)}"


def test_each_rule_file_has_its_test_file_reading_it() -> None:
    sets = sorted(path.name.removesuffix(".rules.yml.j2") for path in RULES)
    assert sorted(path.name.removesuffix(".test.yml") for path in TESTS) == sets
    for path in TESTS:
        name = path.name.removesuffix(".test.yml")
        assert yaml.safe_load(path.read_text())["rule_files"] == [f"{name}.rules.yml"], path.name


def test_the_rule_tests_values_set_every_key_of_monitoring_rules() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["monitoring_rules"]
    fixed = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_monitoring_rule_test_values"]
    assert list(fixed) == list(defaults)


def _alerts_by_name(path: Path) -> dict[str, dict]:
    return {rule["alert"]: rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The rule files as Ansible renders them from the role's own variables, with an inventory that sets one
    key of monitoring_rules (as extra vars: they replace the role's dict as a whole, as an inventory does),
    after the role's prechecks; and the unit-tested copy, with the tests' fixed values."""
    tmp = tmp_path_factory.mktemp("rules")
    render = [
        {
            "ansible.builtin.template": {
                "src": str(ROLE / "templates" / f"{name}.rules.yml.j2"),
                "dest": str(tmp / f"{name}.{copy}.yml"),
                "mode": "0644",
            },
            **({"vars": {"_monitoring_rules": "{{ _monitoring_rule_test_values }}"}} if copy == "tested" else {}),
        }
        for name in ("rabbitmq", "worker")
        for copy in ("deployed", "tested")
    ]
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            # Below task vars, as a role's own variables are (rule_tests.yml overrides _monitoring_rules).
            "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
            "tasks": [
                {"ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "prechecks"}},
                *render,
            ],
        }
    ]
    (tmp / "play.yml").write_text(yaml.safe_dump(play))
    extra = {"ansible_python_interpreter": sys.executable, "monitoring_rules": {"no_consumers_for": "20s"}}
    (tmp / "extra.yml").write_text(yaml.safe_dump(extra))
    result = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-e",
            f"@{tmp / 'extra.yml'}",
            "-e",
            f"role_path={ROLE}",
            "play.yml",
        ],
        check=False,
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return tmp


@pytest.mark.ansible
def test_a_key_set_in_the_inventory_replaces_only_that_default(rendered: Path) -> None:
    rabbitmq = _alerts_by_name(rendered / "rabbitmq.deployed.yml")
    assert rabbitmq["RabbitMQQueueNoConsumers"]["for"] == "20s"
    assert rabbitmq["RabbitMQNodeDown"]["for"] == "2m"
    assert "[6h], 86400)" in rabbitmq["RabbitMQDiskWillFill"]["expr"]
    assert rabbitmq["RabbitMQFileDescriptorsHigh"]["expr"].rstrip().endswith("> 0.8")
    assert "queue=~`jobs\\.dlq`" in rabbitmq["RabbitMQDeadLetterQueueGrowing"]["expr"]
    worker = _alerts_by_name(rendered / "worker.deployed.yml")
    assert worker["WorkerCrashLooping"]["expr"].endswith("[15m]) >= 3")
    assert "> 600" in worker["WorkerNoSuccessfulJob"]["expr"]
    assert len(rabbitmq) + len(worker) == len(alerts())


@pytest.mark.ansible
def test_the_tested_copy_gets_the_tests_fixed_values(rendered: Path) -> None:
    rabbitmq = _alerts_by_name(rendered / "rabbitmq.tested.yml")
    assert rabbitmq["RabbitMQQueueNoConsumers"]["for"] == "10m"
    assert "[1h], 14400)" in rabbitmq["RabbitMQDiskWillFill"]["expr"]
    assert "> 100" in rabbitmq["RabbitMQQueueGrowing"]["expr"]
    assert set(_alerts_by_name(rendered / "worker.tested.yml")) <= alerts()
