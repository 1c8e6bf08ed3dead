"""The metrics server: /ready and /metrics through the WSGI app, the database probe, one loopback test."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

import pytest

from account_worker.config import load_config
from account_worker.decisions import Ack
from account_worker.delivery import Delivery
from account_worker.metrics import WorkerMetrics
from account_worker.metrics_server import DatabaseProbe, make_app, new_registry, serve

LOG = logging.getLogger("account_worker")


def delivery(tag: int) -> Delivery:
    return Delivery(tag=tag, source=None, body=b"{}", message_id=f"m{tag}")


def call(app, path: str) -> tuple[str, bytes]:
    got: dict[str, str] = {}

    def start_response(status, headers, exc_info=None):
        got["status"] = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, start_response))
    return got["status"], body


def test_ready_endpoint_is_503_with_the_reason_then_200(registry, metrics):
    app = make_app(registry, metrics.ready)
    status, body = call(app, "/ready")
    assert status.startswith("503")
    assert b"not connected to the broker" in body
    metrics.connected(True)
    metrics.consuming(True)
    metrics.database(True)
    status, body = call(app, "/ready")
    assert (status, body) == ("200 OK", b"ready\n")


def test_metrics_endpoint_serves_the_worker_and_process_metrics(metrics):
    registry = new_registry()
    live = WorkerMetrics(registry)
    live.settled(delivery(1), Ack())
    status, body = call(make_app(registry, live.ready), "/metrics")
    assert status == "200 OK"
    text = body.decode()
    assert 'account_worker_jobs_total{outcome="done",reason=""} 1.0' in text
    assert "account_worker_job_duration_seconds_bucket" in text
    assert "process_start_time_seconds" in text


class Pinger:
    def __init__(self) -> None:
        self.pings = 0
        self.fail = False
        self.closed = False

    def ping(self) -> None:
        self.pings += 1
        if self.fail:
            raise OSError("connection refused")

    def close(self) -> None:
        self.closed = True


def test_probe_pings_only_while_nothing_else_showed_the_database_recently(metrics, clock):
    pinger = Pinger()
    probe = DatabaseProbe(metrics, pinger.ping, pinger.close, 10.0, LOG)
    probe.check()  # never observed: ping
    assert (pinger.pings, metrics.ready()[1].endswith("database unreachable")) == (1, False)
    clock.now += 5
    metrics.database(True)  # a batch showed it: no ping for the next 10 s
    clock.now += 9
    probe.check()
    assert pinger.pings == 1
    clock.now += 1
    pinger.fail = True
    probe.check()
    assert pinger.pings == 2
    assert metrics.ready()[1].endswith("database unreachable")


def test_server_answers_on_loopback_and_stops(env):
    cfg = load_config({**env, "WORKER_METRICS_PORT": "1"})
    pinger = Pinger()
    served = serve(cfg, 0, pinger.ping, pinger.close, LOG)
    try:
        base = f"http://127.0.0.1:{served.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            assert b"account_worker_jobs_total" in answer.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/ready", timeout=5)
        assert refused.value.code == 503
        served.metrics.connected(True)
        served.metrics.consuming(True)
        served.metrics.database(True)
        with urllib.request.urlopen(f"{base}/ready", timeout=5) as answer:
            assert answer.status == 200
    finally:
        served.close()
