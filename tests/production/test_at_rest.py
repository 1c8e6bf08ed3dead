"""Right after the converge (the first tests of the scenario's verify, before anything is disturbed): every
scrape target up, the brokers over HTTPS with the CA verified, and no alert fired or pending for two minutes."""

from __future__ import annotations

import time

from production import Deployment

WINDOW_S = 120


def test_every_target_is_up_and_the_brokers_are_scraped_over_verified_https(deployment: Deployment) -> None:
    targets = deployment.targets()
    down = [f"{t['scrapeUrl']}: {t['lastError']}" for t in targets if t["health"] != "up"]
    assert not down, f"targets down: {down}"
    brokers = {t["labels"]["instance"].split(":")[0] for t in targets if t["labels"]["job"] == "rabbitmq"}
    assert brokers == set(deployment.brokers)
    for target in targets:
        if target["labels"]["job"].startswith("rabbitmq"):
            assert target["scrapeUrl"].startswith("https://"), target["scrapeUrl"]
            assert target["scrapeUrl"].split("/")[2].endswith(":15691"), target["scrapeUrl"]
    workers = {t["labels"]["instance"].split(":")[0] for t in targets if t["labels"]["job"] == "worker"}
    assert workers == set(deployment.workers)


def test_no_alert_fires_at_rest_for_two_minutes(deployment: Deployment) -> None:
    """Waits until Prometheus has run for the window, then asks whether any alert was pending or firing in it
    and whether any target was ever down in it (the sandbox's missing CA showed as exactly that)."""
    started = float(deployment.query('process_start_time_seconds{job="prometheus"}')[0]["value"][1])
    wait = started + WINDOW_S + 15 - time.time()
    if wait > 0:
        time.sleep(wait)
    alerts = deployment.query(f"count_over_time(ALERTS[{WINDOW_S}s])")
    assert not alerts, "alerts pending or firing at rest: " + ", ".join(
        f"{a['metric'].get('alertname')} ({a['metric'].get('alertstate')})" for a in alerts
    )
    down = deployment.query(f"min_over_time(up[{WINDOW_S}s]) == 0")
    assert not down, "targets down at rest: " + ", ".join(d["metric"].get("instance", "?") for d in down)
