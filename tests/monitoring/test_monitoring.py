"""Prometheus scrapes every broker, its counters follow the traffic, and an alert fires and resolves
in Alertmanager (Molecule `monitoring` scenario; windows shortened in its host_vars)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import browser
import pika
import pytest

from monitoring import Monitoring

OWN_JOBS = {"prometheus", "alertmanager", "rabbitmq", "rabbitmq-detailed"}


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def test_every_scrape_target_is_up(mon: Monitoring, report) -> None:
    def all_up():
        targets = mon.targets()
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every target up", all_up, timeout=10 * mon.scrape_interval)
    jobs = [t["labels"]["job"] for t in targets]
    assert set(jobs) >= OWN_JOBS
    assert jobs.count("rabbitmq") == mon.broker_targets
    assert jobs.count("rabbitmq-detailed") == mon.broker_targets
    report["targets_up"] = f"{len(targets)}/{len(targets)} ({', '.join(sorted(t['scrapeUrl'] for t in targets))})"


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
        report["counter_deltas"] = f"sent={n} queue_depth={int(mon.scalar(depth) or 0)} " + " ".join(
            f"{k}+{v}" for k, v in deltas.items()
        )
        assert deltas == {"received": n, "routed": n}
    finally:
        if connection.is_open:
            connection.channel().queue_delete(queue)
            connection.close()


def test_work_queue_without_consumer_fires_and_a_consumer_resolves_it(mon: Monitoring, report) -> None:
    alert = "RabbitMQQueueNoConsumers"
    assert not mon.active_alerts(alert), "the alert is already active before the test"
    connection = pika.BlockingConnection(pika.URLParameters(mon.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for i in range(5):
            channel.basic_publish(mon.work_queue, mon.work_queue, f"alert-test-{i}".encode())
        started = time.monotonic()

        def ours():
            return [a for a in mon.active_alerts(alert) if a["labels"].get("queue") == mon.work_queue]

        # Fires: its window, plus a scrape, an evaluation and the push to Alertmanager.
        fired = wait_for(f"{alert} active in Alertmanager", ours, mon.no_consumers_for + 12 * mon.scrape_interval)
        to_fire = time.monotonic() - started
        assert fired[0]["labels"]["vhost"] == mon.vhost
        assert to_fire >= mon.no_consumers_for, "fired before its window"
        take_screenshots(mon, report, alert)

        # A consumer attaches (and drains the test's messages): the alert resolves.
        consuming = time.monotonic()
        channel.basic_qos(prefetch_count=10)
        channel.basic_consume(mon.work_queue, lambda ch, m, p, b: ch.basic_ack(m.delivery_tag))
        deadline = consuming + 12 * mon.scrape_interval + 30
        while ours():
            if time.monotonic() > deadline:
                pytest.fail(f"{alert} still active {deadline - consuming:.0f} s after a consumer attached")
            connection.process_data_events(time_limit=1)
        to_resolve = time.monotonic() - consuming
        report["no_consumer_alert"] = (
            f"window={mon.no_consumers_for:.0f}s fired_after={to_fire:.1f}s resolved_after={to_resolve:.1f}s"
        )
    finally:
        if connection.is_open:
            connection.close()


def take_screenshots(mon: Monitoring, report, alert: str) -> None:
    """While the alert is active: Prometheus graphing the queues, its alerts page, and Alertmanager's
    active alerts (MON_SCREENSHOT_DIR set and Chromium installed)."""
    directory = os.environ.get("MON_SCREENSHOT_DIR")
    if not directory or not browser.available():
        report["screenshots"] = "skipped (MON_SCREENSHOT_DIR unset or no chromium/chromedriver)"
        return
    pages = {
        "prometheus-graph": browser.prometheus_graph(
            mon.prometheus, 'rabbitmq_detailed_queue_messages{job="rabbitmq-detailed"}'
        ),
        # Debian's Prometheus serves its classic UI (no React build) under /classic/.
        "prometheus-alerts": mon.prometheus + "/classic/alerts",
        "alertmanager-alerts": mon.alertmanager + f'/api/v2/alerts?filter=alertname="{alert}"',
    }
    paths = browser.screenshots(pages, Path(directory))
    report["screenshots"] = " ".join(str(p) for p in paths)
