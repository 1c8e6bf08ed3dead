"""Clients of the live monitoring suite: Prometheus's and Alertmanager's HTTP APIs, from the MON_* environment."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from support.prometheus import wait_scraped


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class Monitoring:
    prometheus: str
    alertmanager: str
    amqp_url: str
    broker_targets: int
    work_queue: str
    vhost: str
    scrape_interval: float
    no_consumers_for: float
    worker_hosts: tuple[str, ...]
    worker_name: str
    worker_instances: int  # per worker host
    worker_down_for: float
    worker_ready_urls: tuple[str, ...]
    account_uuid: str

    @classmethod
    def from_env(cls) -> Monitoring:
        env = os.environ
        return cls(
            prometheus=env["MON_PROMETHEUS_URL"].rstrip("/"),
            alertmanager=env["MON_ALERTMANAGER_URL"].rstrip("/"),
            amqp_url=env["MON_AMQP_URL"],
            broker_targets=int(env["MON_BROKER_TARGETS"]),
            work_queue=env.get("MON_WORK_QUEUE", "jobs"),
            vhost=env.get("MON_VHOST", "app"),
            scrape_interval=float(env.get("MON_SCRAPE_INTERVAL_S", "15")),
            no_consumers_for=float(env.get("MON_NO_CONSUMERS_FOR_S", "600")),
            worker_hosts=tuple(h for h in env["MON_WORKER_HOSTS"].split(",") if h),
            worker_name=env.get("MON_WORKER_NAME", "account-worker"),
            worker_instances=int(env["MON_WORKER_INSTANCES"]),
            worker_down_for=float(env["MON_WORKER_DOWN_FOR_S"]),
            worker_ready_urls=tuple(u for u in env.get("MON_WORKER_READY_URLS", "").split(",") if u),
            account_uuid=env["MON_ACCOUNT_UUID"],
        )

    @property
    def worker_services(self) -> list[str]:
        """The runit services of one worker host's instances."""
        return [f"{self.worker_name}-{i}" for i in range(1, self.worker_instances + 1)]

    @property
    def all_instances(self) -> int:
        """Instances on every worker host."""
        return self.worker_instances * len(self.worker_hosts)

    def targets(self) -> list[dict[str, Any]]:
        return list(_get(self.prometheus + "/api/v1/targets?state=active")["data"]["activeTargets"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = self.prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return list(_get(url)["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        """The value of a query returning one series, or None when it returns none."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def active_alerts(self, alertname: str) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds as active (firing, not silenced or inhibited)."""
        query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"', "active": "true"})
        return [a for a in _get(self.alertmanager + "/api/v2/alerts?" + query) if a["status"]["state"] == "active"]

    def total(self, promql: str) -> float:
        """A sum() query's value, 0 when it returns no series."""
        return self.scalar(promql) or 0.0

    def wait_scrapes(self) -> None:
        """Until every active target has been scraped by a scrape that started at least a second after this call,
        so that what happened before the call is in Prometheus's data (about one scrape interval)."""
        wait_scraped(self.targets, time.time() + 1.0, 3 * self.scrape_interval + 5)
        time.sleep(0.5)  # the scrape reports itself as it ends; let its samples be committed
