"""Prometheus scrapes every broker and worker instance, the counters follow the jobs sent, and the
worker-down and no-consumer alerts fire and resolve in Alertmanager when every worker instance is
stopped and started again on every worker host (Molecule `worker` scenario; windows shortened in its host_vars)."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pika
import pytest

import browser
from monitoring import Monitoring
from support.containers import run_in
from support.jobs import JobPublisher, drain_dead_letters

OWN_JOBS = {"prometheus", "alertmanager", "rabbitmq", "rabbitmq-detailed", "worker"}
BURST = 200
JOBS_RATE = 'sum by (outcome) (rate(account_worker_jobs_total{job="worker", outcome=~"done|dead_lettered"}[30s]))'


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def jobs_total(outcome: str, reason: str | None = None) -> str:
    labels = f'job="worker", outcome="{outcome}"' + (f', reason="{reason}"' if reason else "")
    return f"sum(account_worker_jobs_total{{{labels}}})"


@pytest.fixture
def publisher(mon: Monitoring):
    p = JobPublisher(mon.amqp_url, connection_name="bundle-monitoring-tests", apikey="monitoring")
    yield p
    p.close()


def test_every_scrape_target_is_up(mon: Monitoring, report) -> None:
    def all_up():
        targets = mon.targets()
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every target up", all_up, timeout=10 * mon.scrape_interval)
    jobs = [t["labels"]["job"] for t in targets]
    assert set(jobs) >= OWN_JOBS
    assert jobs.count("rabbitmq") == mon.broker_targets
    assert jobs.count("rabbitmq-detailed") == mon.broker_targets
    workers = sorted(
        (t["labels"]["instance"].split(":")[0], t["labels"]["worker_instance"])
        for t in targets
        if t["labels"]["job"] == "worker"
    )
    assert workers == sorted((host, service) for host in mon.worker_hosts for service in mon.worker_services)
    report["targets_up"] = f"{len(targets)}/{len(targets)} ({', '.join(sorted(t['scrapeUrl'] for t in targets))})"


def test_every_worker_instance_is_ready(mon: Monitoring) -> None:
    assert len(mon.worker_ready_urls) == mon.all_instances
    for url in mon.worker_ready_urls:
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert (answer.status, answer.read()) == (200, b"ready\n"), url


def test_published_messages_move_the_broker_counters(mon: Monitoring, report) -> None:
    """N messages to a fresh queue: the queue's gauge reads N and the broker's received and
    routed counters move by exactly N."""
    n = 250
    queue = f"monitoring-test-{uuid.uuid4().hex[:8]}"
    received = 'sum(rabbitmq_global_messages_received_total{job="rabbitmq"})'
    routed = 'sum(rabbitmq_global_messages_routed_total{job="rabbitmq"})'
    depth = f'sum(rabbitmq_detailed_queue_messages{{job="rabbitmq-detailed", queue="{queue}"}})'

    connection = pika.BlockingConnection(pika.URLParameters(mon.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
        mon.wait_scrapes()
        before = {"received": mon.scalar(received), "routed": mon.scalar(routed)}
        assert None not in before.values(), before
        channel.confirm_delivery()
        for i in range(n):
            channel.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        wait_for(f"{queue} to read {n} in Prometheus", lambda: mon.scalar(depth) == n, 10 * mon.scrape_interval)
        mon.wait_scrapes()
        after = {"received": mon.scalar(received), "routed": mon.scalar(routed)}
        deltas = {k: int(after[k] - before[k]) for k in before}  # type: ignore[operator]
        report["broker_counter_deltas"] = f"sent={n} queue_depth={int(mon.scalar(depth) or 0)} " + " ".join(
            f"{k}+{v}" for k, v in deltas.items()
        )
        assert deltas == {"received": n, "routed": n}
    finally:
        if connection.is_open:
            connection.channel().queue_delete(queue)
            connection.close()


def test_a_burst_of_jobs_moves_the_worker_and_broker_counters_by_exactly_n(
    mon: Monitoring, publisher: JobPublisher, report
) -> None:
    """BURST valid jobs: the workers' done counter moves by exactly BURST (no duplicate, nothing
    dead-lettered), and the broker received, delivered and had acked exactly as many."""
    queries = {
        "done": jobs_total("done"),
        "duplicate": jobs_total("duplicate"),
        "dead_lettered": jobs_total("dead_lettered"),
        "retried": jobs_total("retried"),
        "broker_received": 'sum(rabbitmq_global_messages_received_total{job="rabbitmq"})',
        "broker_acked": 'sum(rabbitmq_global_messages_acknowledged_total{job="rabbitmq"})',
        "queue_ready": f'sum(rabbitmq_detailed_queue_messages{{job="rabbitmq-detailed", queue="{mon.work_queue}"}})',
    }
    mon.wait_scrapes()
    before = {k: mon.total(q) for k, q in queries.items()}
    prefix = f"mon-burst-{uuid.uuid4().hex[:8]}"
    for i in range(BURST):
        publisher.job(f"{prefix}-{i}", mon.account_uuid)
    wait_for(
        f"the done counter to move by {BURST}",
        lambda: mon.total(queries["done"]) - before["done"] >= BURST,
        timeout=30 * mon.scrape_interval,
    )
    mon.wait_scrapes()
    after = {k: mon.total(q) for k, q in queries.items()}
    deltas = {k: int(after[k] - before[k]) for k in queries}
    report["worker_counter_deltas"] = f"sent={BURST} " + " ".join(f"{k}{v:+d}" for k, v in deltas.items())
    assert deltas == {
        "done": BURST,
        "duplicate": 0,
        "dead_lettered": 0,
        "retried": 0,
        "broker_received": BURST,
        "broker_acked": BURST,
        "queue_ready": 0,
    }
    histogram = mon.total('sum(account_worker_job_duration_seconds_count{job="worker"})')
    assert histogram >= BURST


def test_a_poison_message_raises_the_dead_letter_metric_by_one(
    mon: Monitoring, publisher: JobPublisher, report
) -> None:
    metric = jobs_total("dead_lettered", "invalid_message")
    every_dead_letter = jobs_total("dead_lettered")
    mon.wait_scrapes()
    before, before_all = mon.total(metric), mon.total(every_dead_letter)
    prefix = f"mon-poison-{uuid.uuid4().hex[:8]}"
    publisher.raw(f"{prefix}-1", b"this is not JSON")
    wait_for("the dead-letter metric to move", lambda: mon.total(metric) > before, timeout=20 * mon.scrape_interval)
    mon.wait_scrapes()
    delta, delta_all = mon.total(metric) - before, mon.total(every_dead_letter) - before_all
    report["dead_letter_delta"] = f"poison=1 invalid_message{delta:+.0f} all_reasons{delta_all:+.0f}"
    assert (delta, delta_all) == (1, 1)
    assert [mid for mid, _ in drain_dead_letters(mon.amqp_url, prefix)] == [f"{prefix}-1"]


def test_stopping_every_worker_fires_worker_down_and_no_consumer_and_starting_resolves(mon: Monitoring, report) -> None:
    down, no_consumer = "WorkerInstanceDown", "RabbitMQQueueNoConsumers"

    def active(alert: str) -> list[dict]:
        found = mon.active_alerts(alert)
        if alert == no_consumer:
            return [a for a in found if a["labels"].get("queue") == mon.work_queue]
        return [a for a in found if a["labels"].get("worker_instance") in mon.worker_services]

    assert not active(down) and not active(no_consumer), "an alert is already active before the test"
    prefix = f"mon-alert-{uuid.uuid4().hex[:8]}"
    stopped = time.monotonic()
    for host in mon.worker_hosts:
        run_in(host, "sv", "stop", *mon.worker_services)
    try:
        # Work waits: the no-consumer alert needs a queue holding messages. A short-lived
        # connection: an idle one would miss its heartbeats during the wait below.
        publisher = JobPublisher(mon.amqp_url, connection_name="bundle-monitoring-alert", apikey="monitoring")
        try:
            for i in range(5):
                publisher.job(f"{prefix}-{i}", mon.account_uuid)
        finally:
            publisher.close()
        window = max(mon.worker_down_for, mon.no_consumers_for)
        timeout = window + 12 * mon.scrape_interval + 30
        fired = {}
        while len(fired) < 2:
            for alert, expected in ((down, mon.all_instances), (no_consumer, 1)):
                if alert not in fired and len(active(alert)) == expected:
                    fired[alert] = time.monotonic() - stopped
            if time.monotonic() - stopped > timeout:
                pytest.fail(f"only {sorted(fired)} active {timeout:.0f} s after `sv stop`", pytrace=False)
            time.sleep(1)
        assert fired[down] >= mon.worker_down_for, "WorkerInstanceDown fired before its window"
        assert fired[no_consumer] >= mon.no_consumers_for, "RabbitMQQueueNoConsumers fired before its window"
        take_screenshots(mon, report, down)
    finally:
        started = time.monotonic()
        for host in mon.worker_hosts:
            run_in(host, "sv", "start", *mon.worker_services)
    resolved = {}
    timeout = 12 * mon.scrape_interval + 60
    while len(resolved) < 2:
        for alert in (down, no_consumer):
            if alert not in resolved and not active(alert):
                resolved[alert] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"only {sorted(resolved)} resolved {timeout:.0f} s after `sv start`", pytrace=False)
        time.sleep(1)
    report["worker_down_alert"] = (
        f"window={mon.worker_down_for:.0f}s stop->firing={fired[down]:.1f}s start->resolved={resolved[down]:.1f}s"
    )
    report["no_consumer_alert"] = (
        f"window={mon.no_consumers_for:.0f}s stop->firing={fired[no_consumer]:.1f}s "
        f"start->resolved={resolved[no_consumer]:.1f}s"
    )
    # The restarted instances count from zero: what they did since is the waiting jobs.
    wait_for(
        "the waiting jobs to be done by the restarted instances",
        lambda: mon.total(jobs_total("done")) >= 5,
        20 * mon.scrape_interval,
    )


def test_the_workers_report_ready_again_after_the_restart(mon: Monitoring) -> None:
    def all_ready():
        for url in mon.worker_ready_urls:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True

    wait_for("every instance ready", all_ready, timeout=60)
    mon.wait_scrapes()
    assert mon.total('sum(account_worker_ready{job="worker"})') == mon.all_instances


def take_screenshots(mon: Monitoring, report, alert: str) -> None:
    """While the alert is active: Prometheus graphing the workers' jobs rate, its alerts page, and
    Alertmanager's active alerts (MON_SCREENSHOT_DIR set and Chromium installed)."""
    directory = os.environ.get("MON_SCREENSHOT_DIR")
    if not directory or not browser.available():
        report["screenshots"] = "skipped (MON_SCREENSHOT_DIR unset or no chromium/chromedriver)"
        return
    pages = {
        "prometheus-jobs-rate": browser.prometheus_graph(mon.prometheus, JOBS_RATE, range_="15m"),
        "prometheus-queues": browser.prometheus_graph(
            mon.prometheus, 'rabbitmq_detailed_queue_messages{job="rabbitmq-detailed"}'
        ),
        # Debian's Prometheus serves its classic UI (no React build) under /classic/.
        "prometheus-alerts": mon.prometheus + "/classic/alerts",
        "alertmanager-alerts": mon.alertmanager + f'/api/v2/alerts?filter=alertname="{alert}"',
    }
    paths = browser.screenshots(pages, Path(directory))
    report["screenshots"] = " ".join(str(p) for p in paths)
