"""Bad role variables fail early, with a message naming the variable, and change nothing.

Each case runs a role against a host that cannot be reached: argument_specs
validation and the prechecks' asserts run on the controller, so a case that
reached any task touching the host would show up as `unreachable`, and a case
that changed something as `changed`. Both must stay 0.

The worker role's cases run with `--tags worker-prechecks` (role_runner.PRECHECKS_ONLY),
so that only the argument_specs validation (tagged `always`) and its own prechecks run:
its control case then gets through every precheck without touching the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from role_runner import broker, run_role

WORKER_OK = {
    "worker_amqp_urls": ["amqp://u:p@h/v"],
    "worker_database_url": "postgresql://u:p@h/d",
    "worker_wheelhouse_dir": "/nonexistent/wheelhouse",
}


def worker(**changes):
    vars_ = {**WORKER_OK, **changes}
    return {k: v for k, v in vars_.items() if v is not None}


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
    "cluster without a cookie": (
        "rabbitmq",
        broker(rabbitmq_cluster_nodes=["unreachable-host", "other"]),
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_variables_fail_early(tmp_path: Path, case: str) -> None:
    role, role_vars, named = CASES[case]
    result = run_role(tmp_path, role, role_vars)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert named in output, f"the error does not name {named!r}:\n{output}"
    assert "changed=0" in output and "unreachable=0" in output, output
    assert "Traceback" not in output


def test_good_variables_pass_validation(tmp_path: Path) -> None:
    """The control case: valid variables get past validation and the prechecks'
    asserts, up to the first task that needs the host (which is unreachable)."""
    result = run_role(tmp_path, "rabbitmq", broker())
    output = result.stdout + result.stderr
    assert "unreachable=1" in output, output
    assert "failed=0" in output, output


def test_passwords_never_shown(tmp_path: Path) -> None:
    result = run_role(tmp_path, "rabbitmq", broker(rabbitmq_nofile_limit="lots"))
    output = result.stdout + result.stderr
    assert "a-long-test-password" not in output
    assert "another-password" not in output


def test_good_worker_variables_pass_prechecks(tmp_path: Path) -> None:
    """The control case for a role with dependencies: valid variables and a built wheelhouse get
    through validation and every precheck, without touching the host."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "requirements.txt").write_text("account-worker==0.1.0\n")
    (wheelhouse / ".source-hash").write_text("0123456789abcdef\n")
    result = run_role(tmp_path, "worker", worker(worker_wheelhouse_dir=str(wheelhouse)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "failed=0" in output and "unreachable=0" in output, output
    assert "Check the wheelhouse on the controller" in output, output
