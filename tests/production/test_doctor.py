"""The doctor (playbooks/doctor.yml) on the converged production scenario. It passes; then one thing at a time
is broken, and each time the doctor exits non-zero naming exactly that thing (so the repair before held),
and the break is repaired; the verify runs the doctor once more at the very end (after the cluster's chaos),
where it must pass again. Drift: what the bundle manages shows in
`site.yml --check --diff`, what nobody declared in the doctor. Each run's table is saved under
reports/production/doctor-*.txt. The tests run in file order and repair what they break even when they fail."""

from __future__ import annotations

import subprocess
import time

from production import Deployment, assert_passes, failing, recap
from support.containers import run_in

WORKER = "account-worker"


def assert_names(deployment: Deployment, name: str, expected: set[tuple[str, str]], attempts: int = 1) -> list[dict]:
    """The doctor fails and its failing rows are exactly `expected` (host, check). With attempts > 1, a run
    that names only part of `expected` (the management API shows a change with its next statistics, every
    few seconds) is followed by another, 5 s later."""
    for attempt in range(attempts):
        rc, rows, table = deployment.doctor(name)
        broken = set(failing(rows))
        if broken < expected and attempt + 1 < attempts:
            time.sleep(5)
            continue
        break
    assert rc != 0, f"the doctor passed although {name}:\n{table}"
    assert broken == expected, f"{name}: failing rows differ:\n{table}"
    return rows


def test_the_doctor_passes_on_the_converged_deployment(deployment: Deployment) -> None:
    rows = assert_passes(deployment, "converged")
    checks = {r["check"] for r in rows}
    for expected in ("running", "cluster members", "alarms", "partitions", "feature flags", "deprecated features",
                     "certificate", "file descriptors", "definitions backup", "guest user", "undeclared objects",
                     f"queue {deployment.vhost}/jobs", f"queue {deployment.vhost}/jobs.retry",
                     f"dead letters {deployment.vhost}/jobs.dlq"):  # fmt: skip
        assert expected in checks, f"no {expected!r} row"
    # Either no alert at all, or only pending ones (the smoke suite's unroutable test publishes, on purpose).
    assert "alerts" in checks or any(r["check"].startswith("alert ") and r["state"] == "warn" for r in rows)
    assert sum(r["check"].startswith("ready ") for r in rows) >= len(deployment.workers)
    assert sum(r["check"].startswith("database ") for r in rows) == len(deployment.workers)


def test_a_stopped_worker_instance_is_named(deployment: Deployment) -> None:
    host = deployment.workers[0]
    # The instances listen on the address the host's name resolves to there (worker_metrics_address empty).
    address = run_in(host, "cat", f"/etc/{WORKER}/env/WORKER_METRICS_ADDRESS").stdout.strip()
    run_in(host, "sv", "stop", f"{WORKER}-1")
    try:
        rc, rows, table = deployment.doctor("worker-stopped")
        assert rc != 0, table
        broken = failing(rows)
        ready = (host, f"ready {address}:9191")
        assert ready in broken, table
        # Prometheus may have scraped the stopped instance already: then its target is named too.
        assert set(broken) <= {ready, (deployment.monitoring, f"target worker {host}:9191")}
        # Limited to that worker host (the controller not in the limit): its rows alone, the instance named.
        rc, rows, table = deployment.doctor("worker-stopped-limit-worker", "--limit", host)
        assert rc != 0 and {r["host"] for r in rows} == {host} and failing(rows) == [ready], table
        # Limited to a broker: its rows alone, and it passes.
        broker = deployment.brokers[0]
        rc, rows, table = deployment.doctor("worker-stopped-limit-broker", "--limit", broker)
        assert rc == 0 and rows and {r["host"] for r in rows} == {broker}, table
    finally:
        run_in(host, "sv", "start", f"{WORKER}-1")
        deployment.wait_targets_up()


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
    try:
        rows = assert_names(deployment, "monitoring-wrong-ca", expected)
        details = " ".join(r["detail"] for r in rows if r["state"] == "fail")
        assert "certificate" in details or "x509" in details, details
    finally:
        repair = deployment.playbook("site.yml", "--tags", "monitoring", "--limit", "monitoring")
        assert repair.returncode == 0, repair.stdout[-3000:]
        deployment.wait_targets_up()


def test_a_deleted_queue_and_an_edited_policy_are_found_and_a_converge_repairs_them(deployment: Deployment) -> None:
    """Out-of-band changes to what the bundle manages: the doctor names both queues, `--check --diff` shows the
    two changes it would make (and makes none), a converge of the topology repairs them."""
    seed, vhost = deployment.brokers[0], deployment.vhost
    weaker = '{"dead-letter-exchange":"jobs.dlx","delivery-limit":5}'
    run_in(seed, "rabbitmqctl", "-q", "delete_queue", "-p", vhost, "jobs.retry")
    run_in(seed, "rabbitmqctl", "-q", "set_policy", "-p", vhost, "--priority", "10",
           "--apply-to", "queues", "jobs-dead-letter", "^jobs$", weaker)  # fmt: skip
    try:
        broken = {(seed, f"queue {vhost}/jobs.retry"), (seed, f"queue {vhost}/jobs")}
        rows = assert_names(deployment, "queue-deleted", broken, attempts=4)
        jobs = next(r for r in rows if r["check"] == f"queue {vhost}/jobs")
        assert "x-delivery-limit is 5, needs 50" in jobs["detail"], jobs

        dry = deployment.playbook("site.yml", "--check", "--diff", "--tags", "rabbitmq-topology")
        assert dry.returncode == 0, dry.stdout[-3000:]
        assert recap(dry.stdout)[seed]["changed"] == 1, dry.stdout[-3000:]
        assert "jobs.retry" in dry.stdout and "jobs-dead-letter" in dry.stdout, dry.stdout[-3000:]
        queues = run_in(seed, "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name").stdout.split()
        assert "jobs.retry" not in queues, "the dry run changed something"
    finally:
        repair = deployment.playbook("site.yml", "--tags", "rabbitmq-topology")
        assert repair.returncode == 0, repair.stdout[-3000:]
        # The management API shows the repaired policy with its next statistics (every 5 s): let the next
        # test's doctor see the repair, not the break.
        time.sleep(12)


def test_an_old_backup_export_is_named_and_a_vhost_nobody_declared_is_only_reported(deployment: Deployment) -> None:
    node, seed = deployment.brokers[1], deployment.brokers[0]
    planted = "/var/backups/rabbitmq/definitions-20200101T000000Z.json"
    run_in(node, "sh", "-c", f"echo '{{\"vhosts\": []}}' > {planted} && touch -d '3 days ago' {planted}")
    run_in(seed, "rabbitmqctl", "-q", "add_vhost", "made-by-hand")
    try:
        rows = assert_names(deployment, "backup-old", {(node, "definitions backup")})
        detail = next(r["detail"] for r in rows if r["host"] == node and r["check"] == "definitions backup")
        assert "3.0 d old" in detail, detail
        undeclared = next(r for r in rows if r["check"] == "undeclared objects")
        assert undeclared["state"] == "warn" and "vhost made-by-hand" in undeclared["detail"], undeclared
    finally:
        run_in(node, "systemctl", "start", "rabbitmq-definitions-backup")
        run_in(node, "rm", "-f", planted)
        run_in(seed, "rabbitmqctl", "-q", "delete_vhost", "made-by-hand")


def test_check_mode_changes_nothing_and_reports_nothing_to_change(deployment: Deployment) -> None:
    dry = deployment.playbook("site.yml", "--check", "--diff")
    assert dry.returncode == 0, dry.stdout[-4000:]
    counts = recap(dry.stdout)
    assert set(deployment.brokers + deployment.workers) <= set(counts)
    changed = {host: c["changed"] for host, c in counts.items() if c["changed"]}
    assert not changed, f"--check reports changes on a converged deployment: {changed}\n{dry.stdout[-4000:]}"
