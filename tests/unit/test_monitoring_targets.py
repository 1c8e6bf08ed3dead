"""The monitoring role's scrape targets, rendered from an inventory by Ansible itself (no host needed):
brokers over HTTP, or HTTPS on the TLS port when their inventory gives them a certificate; one
target per worker instance on the ports the worker role gives them."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

# Each test runs Ansible (directly or through a fixture): `make unit`, not `make check`.
pytestmark = pytest.mark.ansible

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

INVENTORY = {
    "all": {
        "children": {
            "brokers": {
                "hosts": {
                    "mq-plain": {},
                    "mq-tls": {"rabbitmq_tls_certificate_src": "/somewhere/mq-tls.crt"},
                }
            },
            "workers": {
                "hosts": {
                    "w-two": {"worker_instances": 2},
                    "w-off": {"worker_metrics_port": 0},
                    "w-own": {"worker_metrics_port": 9300, "worker_name": "other"},
                    "w-default": {},
                }
            },
        }
    }
}


CA_PEM = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----"


def render(tmp_path: Path, extra_vars: dict, inventory: dict | None = None) -> dict:
    """The scrape configs as the role writes them; the CA file Prometheus gets, if any, in ca.pem."""
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory or INVENTORY))
    out = tmp_path / "prometheus.yml"
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
            "tasks": [
                {
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates/prometheus.yml.j2"),
                        "dest": str(out),
                        "mode": "0644",
                    }
                },
                {
                    "ansible.builtin.copy": {
                        "content": "{{ _monitoring_rabbitmq_tls_ca_pem }}",
                        "dest": str(tmp_path / "ca.pem"),
                        "mode": "0644",
                    },
                    "when": "_monitoring_rabbitmq_tls_ca_pem | length > 0",
                },
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "extra.yml").write_text(yaml.safe_dump({"ansible_python_interpreter": sys.executable, **extra_vars}))
    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.yml'}", "play.yml"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {job["job_name"]: job for job in yaml.safe_load(out.read_text())["scrape_configs"]}


def _with_ca(tmp: Path) -> dict:
    (tmp / "given-ca.crt").write_text(CA_PEM + "\n")
    return render(tmp, {"monitoring_rabbitmq_tls_ca_src": str(tmp / "given-ca.crt")})


def _without_a_ca(tmp: Path) -> dict:
    return render(tmp, {})


def _brokers_own_ca(tmp: Path) -> dict:
    """The sandbox's case: the brokers are given a CA in the inventory, the monitoring host nothing."""
    (tmp / "brokers-ca.crt").write_text(CA_PEM + "\n")
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    brokers = inventory["all"]["children"]["brokers"]["hosts"]
    brokers["mq-tls"]["rabbitmq_tls_ca_certificates_src"] = str(tmp / "brokers-ca.crt")
    brokers["mq-tls2"] = {"rabbitmq_tls_certificate": "x", "rabbitmq_tls_ca_certificates": CA_PEM}
    return render(tmp, {}, inventory)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """Each inventory's scrape configs and the directory of its run: one ansible-playbook run each,
    two at a time."""
    setups = {"with a CA": _with_ca, "without a CA": _without_a_ca, "brokers' own CA": _brokers_own_ca}
    tmps = {name: tmp_path_factory.mktemp("targets") for name in setups}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(setup, tmps[name]) for name, setup in setups.items()}
        return {name: (run.result(), tmps[name]) for name, run in runs.items()}


@pytest.fixture(scope="module")
def jobs(rendered: dict[str, tuple[dict, Path]]) -> dict:
    return rendered["with a CA"][0]


def targets(job: dict) -> dict[str, dict]:
    return {target: group.get("labels", {}) for group in job["static_configs"] for target in group["targets"]}


@pytest.mark.parametrize("name", ["rabbitmq", "rabbitmq-detailed"])
def test_a_tls_broker_is_scraped_over_https_on_its_tls_port_with_the_ca(jobs: dict, name: str) -> None:
    found = targets(jobs[name])
    assert set(found) == {"mq-plain:15692", "mq-tls:15691"}
    assert found["mq-tls:15691"].get("__scheme__") == "https"
    assert "__scheme__" not in found["mq-plain:15692"]
    assert jobs[name]["tls_config"] == {"ca_file": "/etc/prometheus/rabbitmq-ca.crt"}


def test_every_worker_instance_is_a_target_unless_its_metrics_are_off(jobs: dict) -> None:
    assert targets(jobs["worker"]) == {
        "w-two:9191": {"worker_instance": "account-worker-1"},
        "w-two:9192": {"worker_instance": "account-worker-2"},
        "w-own:9300": {"worker_instance": "other-1"},
        "w-default:9191": {"worker_instance": "account-worker-1"},
    }


def test_without_a_ca_no_tls_config_is_written(rendered: dict[str, tuple[dict, Path]]) -> None:
    jobs, tmp = rendered["without a CA"]
    assert "tls_config" not in jobs["rabbitmq"]
    assert not (tmp / "ca.pem").exists()


def test_without_a_ca_setting_the_brokers_own_ca_verifies_them(rendered: dict[str, tuple[dict, Path]]) -> None:
    """The sandbox's case: the brokers are given a CA in the inventory, the monitoring host nothing."""
    jobs, tmp = rendered["brokers' own CA"]
    assert jobs["rabbitmq"]["tls_config"] == {"ca_file": "/etc/prometheus/rabbitmq-ca.crt"}
    assert (tmp / "ca.pem").read_text().strip() == CA_PEM  # the same CA once
