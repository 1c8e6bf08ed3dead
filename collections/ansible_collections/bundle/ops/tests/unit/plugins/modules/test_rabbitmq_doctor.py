"""The doctor's pure parts: the rabbitmq_doctor module's row builders and the doctor filters (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ansible_collections.bundle.ops.plugins.filter import doctor as filters
from ansible_collections.bundle.ops.plugins.modules import rabbitmq_doctor as doctor

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()
HOUR, DAY = 3600, 86400
NEEDS = [
    {
        "owner": "worker account-worker",
        "queues": [
            {"name": "jobs", "vhost": "app", "type": "quorum"},
            {
                "name": "jobs.retry",
                "vhost": "app",
                "type": "quorum",
                "arguments": {"x-dead-letter-routing-key": "jobs"},
            },
        ],
        "policies": [
            {
                "name": "jobs-dead-letter",
                "vhost": "app",
                "pattern": "^jobs$",
                "priority": 10,
                "definition": {"dead-letter-exchange": "jobs.dlx", "delivery-limit": "50"},
            }
        ],
    }
]


def states(rows: list[dict]) -> list[str]:
    return [r["state"] for r in rows]


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("1h 30min", 5400), ("45s", 45), ("0", 0), ("2d", 172800), ("", 0)]
)
def test_systemd_time_spans(text: str, seconds: float) -> None:
    assert doctor.parse_timespan(text) == seconds


@pytest.mark.parametrize("label", ["Iter. #2", "Iteration #2"])  # systemd 252 (Debian 12) and 257 (13)
def test_the_schedules_period_is_read_from_systemd_analyze(label: str) -> None:
    output = (
        "  Original form: daily\nNormalized form: *-*-* 00:00:00\n    Next elapse: Thu 2026-12-03 00:00:00 UTC\n"
        f"       From now: 1h left\n       {label}: Fri 2026-12-04 00:00:00 UTC\n"
    )
    assert doctor.calendar_period(output) == DAY
    assert doctor.calendar_period("nothing") is None


def backup(**changes):
    args = {
        "enabled": True,
        "timer_active": True,
        "newest_export": NOW - 2 * HOUR,
        "period": DAY,
        "delay": HOUR,
        "timer_since": NOW - 10 * DAY,
        "now": NOW,
    }
    return doctor.backup_rows(**{**args, **changes})


def test_a_recent_export_passes_and_an_old_one_fails() -> None:
    assert states(backup()) == ["ok"]
    assert states(backup(newest_export=NOW - DAY - HOUR - 30 * 60)) == ["ok"]  # within period + delay + slack
    rows = backup(newest_export=NOW - 3 * DAY)
    assert states(rows) == ["fail"] and "3.0 d old" in rows[0]["detail"]


def test_no_export_is_fine_only_while_the_timer_is_new() -> None:
    assert states(backup(newest_export=None, timer_since=NOW - HOUR)) == ["ok"]
    assert states(backup(newest_export=None, timer_since=NOW - 3 * DAY)) == ["fail"]


def test_an_inactive_timer_fails_and_a_disabled_backup_is_skipped() -> None:
    assert states(backup(timer_active=False)) == ["fail"]
    assert states(backup(enabled=False, timer_active=False)) == ["skip"]


def test_cluster_membership_alarms_and_partitions() -> None:
    nodes = ["rabbit@a", "rabbit@b", "rabbit@c"]
    members = [{"name": n, "running": True} for n in nodes]
    assert states(doctor.cluster_rows({}, members, nodes)) == ["ok", "ok", "ok"]
    members[2]["running"] = False
    rows = doctor.cluster_rows({"mem_alarm": True, "partitions": ["rabbit@c"]}, members, nodes)
    assert states(rows) == ["fail", "fail", "fail"]
    assert "rabbit@c" in rows[0]["detail"] and "memory" in rows[1]["detail"] and "rabbit@c" in rows[2]["detail"]
    extra = [*members[:2], {"name": "rabbit@c", "running": True}, {"name": "rabbit@d", "running": True}]
    assert doctor.cluster_rows({}, extra, nodes)[0]["state"] == "warn"


def test_a_disabled_stable_feature_flag_fails() -> None:
    flags = [{"name": "a", "stability": "stable", "state": "enabled"}, {"name": "k", "stability": "experimental"}]
    assert states(doctor.feature_flag_rows(flags)) == ["ok"]
    flags.append({"name": "b", "stability": "stable", "state": "disabled"})
    assert doctor.feature_flag_rows(flags)[0]["detail"].endswith(": b")


def test_certificate_days() -> None:
    assert doctor.certificate_row("Dec  2 12:00:00 2027 GMT", 30, NOW, "c")["state"] == "ok"
    assert doctor.certificate_row("Dec 12 12:00:00 2026 GMT", 30, NOW, "c")["state"] == "fail"
    assert doctor.certificate_row(None, 30, NOW, "c")["state"] == "fail"


def queue(name: str, arguments: dict, policy: dict | None = None, messages: int = 0) -> dict:
    return {"name": name, "vhost": "app", "type": "quorum", "arguments": {"x-queue-type": "quorum", **arguments},
            "effective_policy_definition": policy or {}, "messages": messages, "consumers": 0}  # fmt: skip


def test_the_queues_the_workers_need_with_their_arguments() -> None:
    good = [
        queue("jobs", {}, {"dead-letter-exchange": "jobs.dlx", "delivery-limit": 50}),
        queue("jobs.retry", {"x-dead-letter-routing-key": "jobs"}),
    ]
    assert states(doctor.queue_rows(good, NEEDS)) == ["ok", "ok"]
    bad = [queue("jobs", {}, {"dead-letter-exchange": "jobs.dlx", "delivery-limit": 5})]
    rows = doctor.queue_rows(bad, NEEDS)
    assert states(rows) == ["fail", "fail"]
    assert "x-delivery-limit is 5, needs 50" in rows[0]["detail"]
    assert rows[1]["detail"].startswith("missing")


def test_dead_letters_above_the_limit_fail() -> None:
    dlqs = [{"name": "jobs.dlq", "vhost": "app"}]
    assert states(doctor.dead_letter_rows([queue("jobs.dlq", {}, messages=3)], dlqs, 5)) == ["ok"]
    assert states(doctor.dead_letter_rows([queue("jobs.dlq", {}, messages=6)], dlqs, 5)) == ["fail"]


def test_objects_nobody_declared_are_reported_as_a_warning() -> None:
    definitions = {
        "vhosts": [{"name": "/"}, {"name": "app"}, {"name": "by-hand"}],
        "users": [{"name": "admin"}],
        "queues": [
            {"name": "jobs", "vhost": "app", "durable": True},
            {"name": "amq.gen-x", "vhost": "app", "durable": False, "exclusive": True},
            {"name": "orders", "vhost": "app", "durable": True},
        ],
        "exchanges": [{"name": "amq.direct", "vhost": "app"}, {"name": "jobs", "vhost": "app"}],
        "policies": [],
    }
    declared = {"vhosts": ["/", "app"], "users": ["admin"], "queues": [{"name": "jobs", "vhost": "app"}],
                "exchanges": [{"name": "jobs", "vhost": "app"}]}  # fmt: skip
    rows = doctor.undeclared_rows(definitions, declared)
    assert states(rows) == ["warn"]
    assert rows[0]["detail"] == "not in the inventory: queue app/orders, vhost by-hand"
    definitions["vhosts"].pop()
    definitions["queues"].pop()
    assert states(doctor.undeclared_rows(definitions, declared)) == ["ok"]


def target(job: str, instance: str, health: str, error: str = "") -> dict:
    return {"labels": {"job": job, "instance": instance}, "scrapeUrl": f"http://{instance}/metrics",
            "health": health, "lastError": error}  # fmt: skip


def test_prometheus_rows_name_each_down_target_and_each_alert() -> None:
    targets = {"status": 200, "json": {"data": {"activeTargets": [
        target("rabbitmq", "mq1:15691", "down", "x509: certificate signed by unknown authority"),
        target("worker", "w1:9191", "up"),
    ]}}}  # fmt: skip
    alerts = {"status": 200, "json": {"data": {"alerts": [
        {"state": "pending", "labels": {"alertname": "WorkerInstanceDown", "instance": "w1:9192"}},
        {"state": "firing", "labels": {"alertname": "RabbitMQNodeDown", "instance": "mq1:15691"},
         "annotations": {"summary": "down"}},
    ]}}}  # fmt: skip
    rows = filters.doctor_prometheus_rows(targets, alerts)
    by_check = {r["check"]: r for r in rows}
    assert by_check["target rabbitmq mq1:15691"]["state"] == "fail"
    assert "x509" in by_check["target rabbitmq mq1:15691"]["detail"]
    assert by_check["target worker w1:9191"]["state"] == "ok"
    assert by_check["alert RabbitMQNodeDown"]["state"] == "fail"
    assert by_check["alert WorkerInstanceDown"]["state"] == "warn"
    quiet = filters.doctor_prometheus_rows(targets, {"status": 200, "json": {"data": {"alerts": []}}})
    assert quiet[-1] == {"check": "alerts", "state": "ok", "detail": "none firing or pending"}
    assert states(filters.doctor_prometheus_rows({"status": -1, "msg": "refused"}, alerts)) == ["fail"]


def test_http_and_psql_rows() -> None:
    ready = {"url": "http://127.0.0.1:9191/ready", "status": 200, "content": "ready\n"}
    assert filters.doctor_http_row(ready, "ready") == {
        "check": "ready 127.0.0.1:9191",
        "state": "ok",
        "detail": "ready",
    }
    refused = {"url": "http://127.0.0.1:9192/ready", "status": -1, "msg": "Connection refused"}
    assert filters.doctor_http_row(refused, "ready")["state"] == "fail"
    entry = {"owner": "w", "user": "worker", "host": "db", "database": "accounts"}
    tls = {"item": entry, "rc": 0, "stdout": "true TLSv1.3"}
    assert filters.doctor_psql_row(tls, "verify-full")["state"] == "ok"
    assert filters.doctor_psql_row({**tls, "stdout": "false -"}, "verify-full")["state"] == "fail"
    assert filters.doctor_psql_row({**tls, "stdout": "false -"}, "")["state"] == "warn"
    assert filters.doctor_psql_row({"item": entry, "rc": 2, "stderr": "no route"}, "")["detail"] == "no route"


def test_the_table_puts_failures_first_and_counts_each_state() -> None:
    rows = [
        {"host": "a", "check": "x", "state": "ok", "detail": "fine"},
        {"host": "bb", "check": "y", "state": "fail", "detail": "broken"},
        {"host": "a", "check": "z", "state": "skip", "detail": "n/a"},
    ]
    lines = filters.doctor_table(rows).splitlines()
    assert lines[0].split() == ["HOST", "CHECK", "STATE", "DETAIL"]
    assert lines[1].split() == ["bb", "y", "FAIL", "broken"]
    assert lines[-1] == "1 fail, 0 warn, 1 ok, 1 skip"
    assert len({line.index("STATE") if "STATE" in line else line.index(line.split()[2]) for line in lines[:-1]}) == 1
