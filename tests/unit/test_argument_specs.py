"""Bad role variables fail early, with a message naming the variable, and change nothing.

Each case runs a role against a host that cannot be reached: argument_specs
validation and the prechecks' asserts run on the controller, so a case that
reached any task touching the host would show up as `unreachable`, and a case
that changed something as `changed`. Both must stay 0.

The cases of one role run in one ansible-playbook run, one inventory host per case
(role_runner.run_cases): each case is asserted on its own host's recap and failures.

The worker role's cases run with `--tags worker-prechecks` (role_runner.PRECHECKS_ONLY),
so that only the argument_specs validation (tagged `always`) and its own prechecks run:
its control case then gets through every precheck without touching the host.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from role_runner import HostResult, broker, host_name, run_cases

pytestmark = pytest.mark.ansible

WORKER_OK = {
    "worker_amqp_urls": ["amqp://u:p@h/v"],
    "worker_database_url": "postgresql://u:p@h/d",
    "worker_wheelhouse_dir": "/nonexistent/wheelhouse",
}


def worker(**changes):
    vars_ = {**WORKER_OK, **changes}
    return {k: v for k, v in vars_.items() if v is not None}


# Two nodes, both in the play (the hosts of the two "cluster without a cookie" cases), so that the
# cluster's only fault is the missing cookie.
CLUSTER = [host_name("cluster without a cookie"), host_name("cluster without a cookie, second node")]

CASES = {
    "missing admin password": ("rabbitmq", broker(rabbitmq_admin_password=None), "rabbitmq_admin_password"),
    "user without password": ("rabbitmq", broker(rabbitmq_users=[{"name": "app"}]), "password"),
    "limit not an integer": ("rabbitmq", broker(rabbitmq_nofile_limit="lots"), "rabbitmq_nofile_limit"),
    "unknown permission key": (
        "rabbitmq",
        broker(
            rabbitmq_users=[
                {"name": "app", "password": "p4ssword-p4ssword", "permissions": [{"vhost": "app", "configure": ".*"}]}
            ]
        ),
        "configure",
    ),
    "queue type that does not exist": (
        "rabbitmq",
        broker(rabbitmq_queues=[{"name": "jobs", "vhost": "app", "type": "lazy"}]),
        "type",
    ),
    "exchange type that does not exist": (
        "rabbitmq",
        broker(rabbitmq_exchanges=[{"name": "jobs", "type": "round-robin"}]),
        "type",
    ),
    "empty vhost name": ("rabbitmq", broker(rabbitmq_vhosts=["/", ""]), "rabbitmq_vhosts"),
    "vhosts not a list": ("rabbitmq", broker(rabbitmq_vhosts={"app": True}), "rabbitmq_vhosts"),
    "permission on an unmanaged vhost": (
        "rabbitmq",
        broker(
            rabbitmq_users=[
                {"name": "app", "password": "p4ssword-p4ssword", "permissions": [{"vhost": "other", "read_priv": ".*"}]}
            ]
        ),
        "rabbitmq_vhosts",
    ),
    "malformed node name": ("rabbitmq", broker(rabbitmq_nodename="rabbit"), "rabbitmq_nodename"),
    "duplicate users": (
        "rabbitmq",
        broker(
            rabbitmq_users=[
                {"name": "app", "password": "p4ssword-p4ssword"},
                {"name": "app", "password": "p4ssword-p4ssword"},
            ]
        ),
        "rabbitmq_users",
    ),
    "policy without a definition": (
        "rabbitmq",
        broker(rabbitmq_policies=[{"name": "p", "pattern": ".*"}]),
        "definition",
    ),
    "apt repository without a key": (
        "rabbitmq",
        broker(rabbitmq_apt_repository={"uris": "http://repo.example", "suites": "x"}),
        "rabbitmq_apt_repository",
    ),
    "placeholder password": ("rabbitmq", broker(rabbitmq_admin_password="CHANGE-ME"), "rabbitmq_admin_password"),
    "publisher without an exchange": (
        "rabbitmq",
        broker(rabbitmq_publishers=[{"name": "publisher", "password": "p4ssword-p4ssword", "vhost": "app"}]),
        "exchange",
    ),
    "publisher named like a user": (
        "rabbitmq",
        broker(rabbitmq_publishers=[{"name": "app", "password": "p4ssword-p4ssword", "exchange": "jobs"}]),
        "rabbitmq_publishers",
    ),
    "publisher on an unmanaged vhost": (
        "rabbitmq",
        broker(
            rabbitmq_publishers=[
                {"name": "publisher", "password": "p4ssword-p4ssword", "exchange": "jobs", "vhost": "other"}
            ]
        ),
        "rabbitmq_vhosts",
    ),
    "publisher with a placeholder password": (
        "rabbitmq",
        broker(rabbitmq_publishers=[{"name": "publisher", "password": "CHANGE-ME", "exchange": "jobs"}]),
        "rabbitmq_publishers",
    ),
    "erlang packages not a list": ("erlang", {"erlang_packages": {"erlang-base": True}}, "erlang_packages"),
    "erlang pin priority not a number": ("erlang", {"erlang_pin_priority": "high"}, "erlang_pin_priority"),
    "sandbox state unknown": ("sandbox_hosts", {"sandbox_hosts_state": "running"}, "sandbox_hosts_state"),
    "cluster without a cookie": ("rabbitmq", broker(rabbitmq_cluster_nodes=CLUSTER), "rabbitmq_erlang_cookie"),
    "cluster without a cookie, second node": (
        "rabbitmq",
        broker(rabbitmq_cluster_nodes=CLUSTER),
        "rabbitmq_erlang_cookie",
    ),
    "cookie with bad characters": (
        "rabbitmq",
        broker(rabbitmq_erlang_cookie="not a valid cookie!"),
        "rabbitmq_erlang_cookie",
    ),
    "worker without a database URL": ("worker", worker(worker_database_url=None), "worker_database_url"),
    "worker without broker URLs": ("worker", worker(worker_amqp_urls=None), "worker_amqp_urls"),
    "worker without a wheelhouse": ("worker", worker(worker_wheelhouse_dir=None), "worker_wheelhouse_dir"),
    "worker wheelhouse not built": ("worker", worker(), "worker_wheelhouse_dir"),
    "worker instances not a number": ("worker", worker(worker_instances="many"), "worker_instances"),
    "worker URL of another scheme": ("worker", worker(worker_amqp_urls=["http://h/"]), "worker_amqp_urls"),
    "worker env not WORKER_*": ("worker", worker(worker_env={"PATH": "/tmp"}), "worker_env"),
    "worker env setting a queue the role owns": ("worker", worker(worker_env={"WORKER_QUEUE": "x"}), "worker_queue"),
    "worker delivery limit not above the crash limit": (
        "worker",
        worker(worker_delivery_limit=3),
        "worker_delivery_limit",
    ),
    "worker retry queue equal to the work queue": ("worker", worker(worker_retry_queue="jobs"), "worker_retry_queue"),
    "inventory policy replacing the worker's": (
        "rabbitmq",
        broker(
            rabbitmq_dependent_definitions=[
                {
                    "owner": "worker account-worker",
                    "queues": [{"name": "jobs", "vhost": "app"}],
                    "policies": [
                        {
                            "name": "jobs-dead-letter",
                            "vhost": "app",
                            "pattern": "^jobs$",
                            "priority": 10,
                            "definition": {"dead-letter-exchange": "jobs.dlx", "delivery-limit": 50},
                        }
                    ],
                }
            ],
            rabbitmq_policies=[
                {"name": "short-ttl", "vhost": "app", "pattern": ".*", "priority": 20, "definition": {"message-ttl": 1}}
            ],
        ),
        "jobs-dead-letter",
    ),
    "worker objects in an unmanaged vhost": (
        "rabbitmq",
        broker(rabbitmq_dependent_definitions=[{"owner": "worker w", "queues": [{"name": "jobs", "vhost": "other"}]}]),
        "rabbitmq_vhosts",
    ),
    "database fixture without a password": ("postgresql_sandbox", {}, "postgresql_sandbox_password"),
    "client repository not a dict": (
        "postgresql_client",
        {"postgresql_client_apt_repository": ["x"]},
        "postgresql_client_apt_repository",
    ),
    "runit packages not a list": ("runit", {"runit_packages": {"runit": 1}}, "runit_packages"),
    "monitoring receiver not defined": (
        "monitoring",
        {"monitoring_alertmanager_receiver": "pager"},
        "monitoring_alertmanager_receiver",
    ),
    "monitoring receiver without a name": (
        "monitoring",
        {"monitoring_alertmanager_receivers": [{"webhook_configs": [{"url": "http://h/"}]}]},
        "name",
    ),
    "monitoring fd ratio above 1": ("monitoring", {"monitoring_rules": {"fd_ratio": 80}}, "monitoring_rules.fd_ratio"),
    "monitoring window not a duration": (
        "monitoring",
        {"monitoring_rules": {"no_consumers_for": "ten minutes"}},
        "monitoring_rules.no_consumers_for",
    ),
    "monitoring work queues not a list": (
        "monitoring",
        {"monitoring_rules": {"work_queues": {"jobs": True}}},
        "work_queues",
    ),
    "monitoring extra job reusing a role job": (
        "monitoring",
        {"monitoring_prometheus_extra_scrape_configs": [{"job_name": "rabbitmq"}]},
        "monitoring_prometheus_extra_scrape_configs",
    ),
    "monitoring scheme unknown": ("monitoring", {"monitoring_rabbitmq_scheme": "ftp"}, "monitoring_rabbitmq_scheme"),
    "TLS certificate without its key and CA": (
        "rabbitmq",
        broker(rabbitmq_tls_certificate="-----BEGIN CERTIFICATE-----"),
        "rabbitmq_tls_private_key",
    ),
    "TLS certificate given twice": (
        "rabbitmq",
        broker(
            rabbitmq_tls_certificate="x",
            rabbitmq_tls_certificate_src="/nonexistent/cert.pem",
            rabbitmq_tls_private_key="k",
            rabbitmq_tls_ca_certificates="c",
        ),
        "rabbitmq_tls_certificate_src",
    ),
    "TLS-only without a certificate": ("rabbitmq", broker(rabbitmq_tls_only=True), "rabbitmq_tls_only"),
    "inter-node TLS without a certificate": (
        "rabbitmq",
        broker(rabbitmq_tls_inter_node=True),
        "rabbitmq_tls_inter_node",
    ),
    "mutual TLS without peer verification": (
        "rabbitmq",
        broker(rabbitmq_tls_fail_if_no_peer_cert=True, rabbitmq_tls_verify_peer=False),
        "rabbitmq_tls_verify_peer",
    ),
    "TLS version that is not offered": ("rabbitmq", broker(rabbitmq_tls_versions=["tlsv1.1"]), "rabbitmq_tls_versions"),
    "TLS login from an unknown field": ("rabbitmq", broker(rabbitmq_tls_login_from="email"), "rabbitmq_tls_login_from"),
    "TLS minimum days not a number": ("rabbitmq", broker(rabbitmq_tls_min_days="soon"), "rabbitmq_tls_min_days"),
    "AMQPS port not a number": ("rabbitmq", broker(rabbitmq_amqps_port="amqps"), "rabbitmq_amqps_port"),
    "firewall switch not a boolean": ("firewall", {"firewall_enabled": "maybe"}, "firewall_enabled"),
    "firewall rule without sources": (
        "firewall",
        {"firewall_enabled": True, "firewall_extra_rules": [{"name": "app", "ports": [8080]}]},
        "firewall_extra_rules",
    ),
    "firewall rule with ports as text": (
        "firewall",
        {"firewall_enabled": True, "firewall_extra_rules": [{"name": "app", "ports": "80", "sources": ["10.0.0.0/8"]}]},
        "firewall_extra_rules",
    ),
    "account host without the workers' keys": (
        "account_host",
        {"account_host_worker_sources": ["10.0.0.0/8"]},
        "account_host_worker_keys",
    ),
    "apt pin without a version": (
        "apt_source",
        {"apt_source_name": "rabbitmq", "apt_source_pins": [{"package": "rabbitmq-server"}]},
        "version",
    ),
    "sandboxed service without a unit": (
        "systemd_sandbox",
        {"systemd_sandbox_directives": ["ProtectHome=yes"]},
        "systemd_sandbox_unit",
    ),
}


# The controls: valid variables get past validation (and the worker's, past every precheck).
GOOD_BROKER = "control: valid broker variables"
GOOD_WORKER = "control: valid worker variables and a built wheelhouse"
# The variables of "limit not an integer": a failure whose output must not show the passwords.
PASSWORDS = "control: passwords in a failing run"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostResult]:
    """Every case and control of this module, by case: one ansible-playbook run per role, the
    roles' runs two at a time."""
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    (wheelhouse / "requirements.txt").write_text("account-worker==0.1.0\n")
    (wheelhouse / ".source-hash").write_text("0123456789abcdef\n")
    everything: dict[str, tuple[str, dict[str, Any]]] = {
        **{case: (role, role_vars) for case, (role, role_vars, _named) in CASES.items()},
        GOOD_BROKER: ("rabbitmq", broker()),
        GOOD_WORKER: ("worker", worker(worker_wheelhouse_dir=str(wheelhouse))),
        PASSWORDS: ("rabbitmq", broker(rabbitmq_nofile_limit="lots")),
    }
    batches: dict[str, dict[str, dict[str, Any]]] = {}
    for case, (role, role_vars) in everything.items():
        batches.setdefault(role, {})[case] = role_vars
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(run_cases, tmp_path_factory.mktemp(role), role, cases)
            for role, cases in sorted(batches.items(), key=lambda batch: -len(batch[1]))  # the biggest first
        ]
        return {case: host for run in runs for case, host in run.result().items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_variables_fail_early(results: dict[str, HostResult], case: str) -> None:
    _role, _vars, named = CASES[case]
    host = results[case]
    assert host.recap.get("failures", 0) >= 1, host.describe()
    assert named in host.errors(), f"the error does not name {named!r}:\n{host.describe()}"
    assert host.recap["changed"] == 0 and host.recap["unreachable"] == 0, host.describe()
    assert "Traceback" not in host.everything() + host.output


def test_good_variables_pass_validation(results: dict[str, HostResult]) -> None:
    """The control case: valid variables get past validation and the prechecks'
    asserts, up to the first task that needs the host (which is unreachable)."""
    host = results[GOOD_BROKER]
    assert host.recap.get("unreachable") == 1, host.describe()
    assert host.recap["failures"] == 0, host.describe()


def test_passwords_never_shown(results: dict[str, HostResult]) -> None:
    """Not in the failure of the control's host, nor anywhere in the output of the broker cases' run."""
    host = results[PASSWORDS]
    assert host.recap.get("failures", 0) >= 1, host.describe()
    assert "a-long-test-password" not in host.output
    assert "another-password" not in host.output


def test_good_worker_variables_pass_prechecks(results: dict[str, HostResult]) -> None:
    """The control case for a role with dependencies: valid variables and a built wheelhouse get
    through validation and every precheck, without touching the host."""
    host = results[GOOD_WORKER]
    assert host.recap.get("failures") == 0 and host.recap["unreachable"] == 0, host.describe()
    assert "worker : Check the wheelhouse on the controller" in host.ok, host.describe()
