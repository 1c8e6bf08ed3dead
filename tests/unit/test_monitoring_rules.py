"""Every alert of the monitoring role has promtool unit tests: a case where it fires and one where it
does not (the tests themselves run with promtool on the monitoring host, at converge)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "monitoring"
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
