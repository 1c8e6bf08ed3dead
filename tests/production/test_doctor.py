"""The doctor (playbooks/doctor.yml) on the converged production scenario: it passes, then each break is named
by it (and only that break: the repair before it held) with a non-zero exit, and it passes again once repaired.
Drift: what the bundle manages shows in `site.yml --check --diff`, what nobody declared in the doctor.
The tables are saved under reports/production/doctor-*.txt."""

from __future__ import annotations

import subprocess
import time

import pytest

from production import Deployment, failing, recap
from support.containers import run_in

WORKER = "account-worker"


def assert_passes(deployment: Deployment, name: str) -> list[dict]:
    rc, rows, table = deployment.doctor(name)
    assert rc == 0 and not failing(rows), f"the doctor should pass ({name}):\n{table}"
    return rows


def assert_names(deployment: Deployment, name: str, expected: set[tuple[str, str]]) -> list[dict]:
    """The doctor fails and its failing rows are exactly `expected` (host, check)."""
    rc, rows, table = deployment.doctor(name)
    assert rc != 0, f"the doctor passed although {name}:\n{table}"
    assert set(failing(rows)) == expected, f"{name}: failing rows differ:\n{table}"
    return rows


def test_the_doctor_passes_on_the_converged_deployment(deployment: Deployment) -> None:
    rows = assert_passes(deployment, "converged")
    checks = {r["check"] for r in rows}
    for expected in ("running", "cluster members", "alarms", "partitions", "feature flags", "deprecated features",
                     "certificate", "file descriptors", "definitions backup", "guest user", "undeclared objects",
                     "alerts", f"queue {deployment.vhost}/jobs", f"queue {deployment.vhost}/jobs.retry",
                     f"dead letters {deployment.vhost}/jobs.dlq"):  # fmt: skip
        assert expected in checks, f"no {expected!r} row"
    assert sum(r["check"].startswith("ready ") for r in rows) >= len(deployment.workers)
    assert sum(r["check"].startswith("database ") for r in rows) == len(deployment.workers)


def test_a_stopped_worker_instance_is_named(deployment: Deployment) -> None:
    host = deployment.workers[0]
    run_in(host, "sv", "stop", f"{WORKER}-1")
    try:
        rc, rows, table = deployment.doctor("worker-stopped")
        assert rc != 0, table
        broken = failing(rows)
        assert (host, "ready 127.0.0.1:9191") in broken, table
        # Prometheus may have scraped the stopped instance already: then its target is named too.
        assert set(broken) <= {(host, "ready 127.0.0.1:9191"), (deployment.monitoring, f"target worker {host}:9191")}
    finally:
        run_in(host, "sv", "start", f"{WORKER}-1")
    deployment.wait_targets_up()
    assert_passes(deployment, "worker-repaired")


def test_prometheus_with_the_wrong_ca_is_named_and_a_converge_repairs_it(deployment: Deployment, tmp_path) -> None:
    """The sandbox's original defect: Prometheus without the brokers' CA sees every broker down."""
    other = tmp_path / "other-ca"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{other}.key", "-out", f"{other}.crt", "-days", "1", "-subj", "/CN=wrong CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["podman", "cp", f"{other}.crt", f"{deployment.monitoring}:/etc/prometheus/rabbitmq-ca.crt"], check=True
    )
    run_in(deployment.monitoring, "systemctl", "reload", "prometheus")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(t["health"] == "down" for t in deployment.targets() if t["labels"]["job"].startswith("rabbitmq")):
            break
        time.sleep(2)
    expected = {
        (deployment.monitoring, f"target {job} {broker}:15691")
        for job in ("rabbitmq", "rabbitmq-detailed")
        for broker in deployment.brokers
    }
    rows = assert_names(deployment, "monitoring-wrong-ca", expected)
    details = " ".join(r["detail"] for r in rows if r["state"] == "fail")
    assert "certificate" in details or "x509" in details, details
    repair = deployment.playbook("site.yml", "--tags", "monitoring", "--limit", "monitoring")
    assert repair.returncode == 0, repair.stdout[-3000:]
    deployment.wait_targets_up()
    assert_passes(deployment, "monitoring-repaired")


def test_a_deleted_queue_and_an_edited_policy_are_found_and_a_converge_repairs_them(deployment: Deployment) -> None:
    """Out-of-band changes to what the bundle manages: the doctor names the missing queue, `--check --diff`
    shows both changes it would make (and makes none), a converge of the topology repairs them."""
    seed = deployment.brokers[0]
    run_in(seed, "rabbitmqctl", "-q", "delete_queue", "-p", deployment.vhost, "jobs.retry")
    weaker = '{"dead-letter-exchange":"jobs.dlx","delivery-limit":5}'
    run_in(seed, "rabbitmqctl", "-q", "set_policy", "-p", deployment.vhost, "--priority", "10",
           "--apply-to", "queues", "jobs-dead-letter", "^jobs$", weaker)  # fmt: skip
    broken = {(seed, f"queue {deployment.vhost}/jobs.retry"), (seed, f"queue {deployment.vhost}/jobs")}
    rows = assert_names(deployment, "queue-deleted", broken)
    jobs = next(r for r in rows if r["check"] == f"queue {deployment.vhost}/jobs")
    assert "x-delivery-limit is 5, needs 50" in jobs["detail"], jobs

    dry = deployment.playbook("site.yml", "--check", "--diff", "--tags", "rabbitmq-topology")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert recap(dry.stdout)[seed]["changed"] == 1, dry.stdout[-3000:]
    assert "jobs.retry" in dry.stdout and "jobs-dead-letter" in dry.stdout, dry.stdout[-3000:]
    queues = run_in(seed, "rabbitmqctl", "-q", "list_queues", "-p", deployment.vhost, "name").stdout.split()
    assert "jobs.retry" not in queues, "the dry run changed something"

    repair = deployment.playbook("site.yml", "--tags", "rabbitmq-topology")
    assert repair.returncode == 0, repair.stdout[-3000:]
    assert_passes(deployment, "queue-repaired")


def test_an_old_backup_export_is_named(deployment: Deployment) -> None:
    node = deployment.brokers[1]
    planted = "/var/backups/rabbitmq/definitions-20200101T000000Z.json"
    run_in(node, "sh", "-c", f"echo '{{\"vhosts\": []}}' > {planted} && touch -d '3 days ago' {planted}")
    try:
        rows = assert_names(deployment, "backup-old", {(node, "definitions backup")})
        detail = next(r["detail"] for r in rows if r["host"] == node and r["check"] == "definitions backup")
        assert "3.0 d old" in detail, detail
        run_in(node, "systemctl", "start", "rabbitmq-definitions-backup")
    finally:
        run_in(node, "rm", "-f", planted)
    assert_passes(deployment, "backup-repaired")


def test_a_vhost_nobody_declared_is_reported_without_failing(deployment: Deployment) -> None:
    seed = deployment.brokers[0]
    run_in(seed, "rabbitmqctl", "-q", "add_vhost", "made-by-hand")
    try:
        rc, rows, table = deployment.doctor("undeclared-vhost")
        assert rc == 0, table
        row = next(r for r in rows if r["check"] == "undeclared objects")
        assert row["state"] == "warn" and "vhost made-by-hand" in row["detail"], table
    finally:
        run_in(seed, "rabbitmqctl", "-q", "delete_vhost", "made-by-hand")


@pytest.mark.parametrize("when", ["converged"])
def test_check_mode_changes_nothing_and_reports_nothing_to_change(deployment: Deployment, when: str) -> None:
    dry = deployment.playbook("site.yml", "--check", "--diff")
    assert dry.returncode == 0, dry.stdout[-4000:]
    counts = recap(dry.stdout)
    assert set(deployment.brokers + deployment.workers) <= set(counts)
    changed = {host: c["changed"] for host, c in counts.items() if c["changed"]}
    assert not changed, f"--check reports changes on a converged deployment: {changed}\n{dry.stdout[-4000:]}"
