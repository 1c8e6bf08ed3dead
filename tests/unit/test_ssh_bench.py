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
    return Result(key, ssh_throughput.ROWS[key], messages, messages / rate, 0.5, 40.0, 1.0, done=messages)


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


def test_a_row_that_did_not_finish_fails_its_goals() -> None:
    failed = _result("ssh", 150.0)
    failed.done = 0
    rows = ssh_throughput.ssh_goals({"ssh": failed, "celery-ssh": _result("celery-ssh", 10.0, 200)}, 16)
    assert math.isnan(rows[0][1])
    assert [met for *_, met in rows] == [False, False]


def test_labels_fit_the_table_and_start_with_their_letter() -> None:
    lines = table_lines({key: _result(key, 100.0) for key in ssh_throughput.ROWS})
    assert [line.split(" ", 1)[0] for line in lines[2:]] == ["(a)", "(b)", "(c)"]
    assert all(len(label) <= 40 for label in ssh_throughput.ROWS.values())
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
    assert args.only == ["ssh", "celery-ssh", "sleep"]
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
