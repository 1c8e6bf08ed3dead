"""Host checks of a monitoring host provisioned by the monitoring role (testinfra).

Run: pytest tests/host/test_monitoring.py --hosts=podman://CONTAINER (or ssh://host).
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("package", ["prometheus", "prometheus-alertmanager"])
def test_packages_installed(host, package: str) -> None:
    assert host.package(package).is_installed


def test_recommends_not_pulled_in(host) -> None:
    assert not host.package("prometheus-node-exporter").is_installed


@pytest.mark.parametrize("service", ["prometheus", "prometheus-alertmanager"])
def test_services_running_and_enabled(host, service: str) -> None:
    assert host.service(service).is_running
    assert host.service(service).is_enabled


@pytest.mark.parametrize("port", [9090, 9093])
def test_listening(host, port: int) -> None:
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening or host.socket(f"tcp://:::{port}").is_listening


def test_configuration_is_valid(host) -> None:
    host.run_expect([0], "promtool check config /etc/prometheus/prometheus.yml")
    host.run_expect([0], "promtool check rules /etc/prometheus/rules/rabbitmq.yml /etc/prometheus/rules/worker.yml")
    host.run_expect([0], "amtool check-config /etc/prometheus/alertmanager.yml")


def test_rule_unit_tests_pass(host) -> None:
    result = host.run("cd /etc/prometheus/rule-tests && promtool test rules rabbitmq.test.yml worker.test.yml")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_no_receiver_phones_out(host) -> None:
    config = host.file("/etc/prometheus/alertmanager.yml").content_string
    assert "receiver: 'null'" in config or 'receiver: "null"' in config or "receiver: null" in config
    assert "webhook_configs" not in config and "email_configs" not in config
