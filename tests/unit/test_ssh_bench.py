"""The SSH benchmark's pure parts (no broker, no database, no sshd): the jobs it publishes, its
goals, its target check, its CLI, and the sleep action it times."""

from __future__ import annotations

import json
import math
import time

import pytest

import ssh_throughput
from publishing import job_messages
from report import Result, table_lines
from sleep_action import sleep_100ms


def _result(key: str, rate: float, messages: int = 2000) -> Result:
    base, _, rtt = key.partition("-rtt")
    label = ssh_throughput.row_label(base, int(rtt or 0))
    return Result(key, label, messages, messages / rate, 0.5, 40.0, 1.0, done=messages)


def test_ssh_jobs_name_the_command_in_their_payload_for_one_account() -> None:
    messages = job_messages("bench-x-", 2, ("acct",), {"command": "true"})
    assert [json.loads(body) for _, body, _ in messages] == [
        {"apikey": "bench", "account_uuid": "acct", "payload": {"command": "true"}}
    ] * 2
    assert [m[0] for m in messages] == ["bench-x-0000000", "bench-x-0000001"]


def test_goals_are_a_rate_a_ratio_to_celery_and_the_concurrency_bound() -> None:
    results = {
        "ssh": _result("ssh", 150.0),
        "celery-ssh": _result("celery-ssh", 10.0, 200),
        "sleep": _result("sleep", 120.0),
    }
    rows = {name: (round(value, 3), goal, met) for name, value, goal, met in ssh_throughput.ssh_goals(results, 16)}
    assert rows == {
        "a jobs/s": (150.0, ">= 100", True),
        "a/b": (15.0, ">= 10", True),
        "c jobs/s (bound 16)": (120.0, ">= 128", False),
    }


def test_at_each_round_trip_time_a_has_its_own_rate_and_ratio_goals() -> None:
    results = {
        "ssh": _result("ssh", 150.0),
        "celery-ssh": _result("celery-ssh", 10.0, 200),
        "ssh@20ms": _result("ssh-rtt20", 80.0),
        "celery-ssh@20ms": _result("celery-ssh-rtt20", 4.0, 200),
    }
    rows = {name: (round(value, 3), met) for name, value, _, met in ssh_throughput.ssh_goals(results, 16, [0, 20])}
    assert rows == {
        "a jobs/s": (150.0, True),
        "a/b": (15.0, True),
        "a jobs/s, RTT 20ms": (80.0, False),
        "a/b, RTT 20ms": (20.0, True),
    }


def test_known_hosts_gains_the_relay_address_with_the_same_pinned_key() -> None:
    pinned = "sandbox-account,[127.0.0.1]:2222 ssh-ed25519 AAAAkey\n[other]:22 ssh-rsa AAAAother\n"
    name = ssh_throughput.known_hosts_name("127.0.0.1", 2222)
    alias = ssh_throughput.known_hosts_name("127.0.0.1", 40123)
    assert ssh_throughput.alias_known_hosts(pinned, name, alias) == pinned + "[127.0.0.1]:40123 ssh-ed25519 AAAAkey\n"
    assert ssh_throughput.known_hosts_name("[::1]", 22) == "::1"
    with pytest.raises(SystemExit, match=r"no key for \[127.0.0.1\]:2200"):
        ssh_throughput.alias_known_hosts(pinned, "[127.0.0.1]:2200", alias)
    with pytest.raises(SystemExit):  # a hashed name cannot be matched
        ssh_throughput.alias_known_hosts("|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAkey\n", name, alias)


def test_a_row_that_did_not_finish_fails_its_goals() -> None:
    failed = _result("ssh", 150.0)
    failed.done = 0
    rows = ssh_throughput.ssh_goals({"ssh": failed, "celery-ssh": _result("celery-ssh", 10.0, 200)}, 16)
    assert math.isnan(rows[0][1])
    assert [met for *_, met in rows] == [False, False]


def test_labels_fit_the_table_and_start_with_their_letter() -> None:
    lines = table_lines({key: _result(key, 100.0) for key in ssh_throughput.ROWS})
    assert [line.split(" ", 1)[0] for line in lines[2:]] == ["(a)", "(b)", "(c)"]
    labels = [ssh_throughput.row_label(key, rtt) for key in ssh_throughput.NETWORK_ROWS for rtt in (0, 20, 1000)]
    assert all(len(label) <= 40 for label in [*labels, *ssh_throughput.ROWS.values()]), labels
    assert len(ssh_throughput.ROWS["sleep"] + ", c=256") <= 40  # phase_sleep adds the bound


@pytest.mark.parametrize("host", ["127.0.0.1:2222", "[::1]:2222", "localhost:22"])
def test_the_target_must_be_a_loopback_address_with_a_port(host: str) -> None:
    assert ssh_throughput.split_host(host)[1] in (22, 2222)


@pytest.mark.parametrize("host", ["10.0.0.5:22", "sandbox-account:22", "127.0.0.1"])
def test_a_target_off_this_machine_is_refused(host: str) -> None:
    with pytest.raises(SystemExit):
        ssh_throughput.split_host(host)


def test_cli_defaults_are_the_three_rows_with_medians_of_three() -> None:
    args = ssh_throughput.parse_args([])
    assert args.only == ["ssh", "celery-ssh", "ssh@20ms", "celery-ssh@20ms", "sleep"]
    assert args.rtt_ms == [0, 20]
    assert ssh_throughput.parse_args(["--only", "sleep,ssh", "--rtt-ms", "50,0,50"]).only == [
        "ssh",
        "ssh@50ms",
        "sleep",
    ]
    for bad in ("-5", "x", "", "2000"):
        with pytest.raises(SystemExit):
            ssh_throughput.parse_args(["--rtt-ms", bad])
    assert (args.n, args.celery_n, args.sleep_n, args.concurrency, args.repeat) == (2000, 150, 2000, 16, 3)
    assert args.png.name == "ssh_throughput.png"
    with pytest.raises(SystemExit):
        ssh_throughput.parse_args(["--only", "ssh,nope"])
    with pytest.raises(SystemExit):
        ssh_throughput.parse_args(["--concurrency", "0"])


def test_the_sleep_action_sleeps_100_ms_and_reports_done(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert sleep_100ms(object(), "h") == "done"
    assert slept == [ssh_throughput.SLEEP_SECONDS] == [0.1]
