"""Every alert of the monitoring role has promtool unit tests: a case where it fires and one where it
does not (the tests themselves run with promtool on the monitoring host, at converge)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "monitoring"
RULES = ROLE / "templates" / "rabbitmq.rules.yml.j2"
TESTS = sorted((ROLE / "files" / "rule-tests").glob("*.test.yml"))


def alerts() -> set[str]:
    return set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), flags=re.M))


def cases() -> list[dict]:
    found = []
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            found.extend(test.get("alert_rule_test", []))
    return found


def test_the_rules_define_the_broker_alerts() -> None:
    assert len(alerts()) >= 10, alerts()


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing = {c["alertname"] for c in cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases() if not c.get("exp_alerts")}
    assert not alerts() - firing, f"alerts never tested firing: {sorted(alerts() - firing)}"
    assert not alerts() - quiet, f"alerts never tested quiet: {sorted(alerts() - quiet)}"


def test_tests_name_only_existing_alerts() -> None:
    unknown = {c["alertname"] for c in cases()} - alerts()
    assert not unknown, f"tests of alerts the rules do not define: {sorted(unknown)}"


def test_rule_tests_read_the_rendered_rules() -> None:
    for path in TESTS:
        assert yaml.safe_load(path.read_text())["rule_files"] == ["rabbitmq.rules.yml"], path.name
