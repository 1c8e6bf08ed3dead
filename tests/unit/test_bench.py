"""The throughput benchmark's pure parts (no broker, no database): acking of the reference
consumers, confirm bookkeeping, the jobs it publishes, the report and the CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time

import pytest

import latency
import processes
import worker_throughput
from publishing import ACCOUNTS, Confirms, job_messages
from raw_consumer import Acker, Marks
from report import Result, goals, median_result, run_and_report, table_lines, write_json


def _acker(every: int) -> tuple[Acker, list[tuple[int, bool]], list[int]]:
    frames: list[tuple[int, bool]] = []
    totals: list[int] = []
    return Acker(lambda tag, multiple: frames.append((tag, multiple)), every, totals.append), frames, totals


def test_ack_each_sends_one_frame_per_delivery_as_it_arrives() -> None:
    acker, frames, totals = _acker(1)
    for tag in (1, 2, 3):
        acker.delivered(tag)
    acker.flush()
    assert frames == [(1, False), (2, False), (3, False)]
    assert totals == [1, 2, 3]


def test_batch_ack_sends_one_multiple_frame_per_read_and_at_most_every_n() -> None:
    acker, frames, totals = _acker(500)
    for tag in range(1, 121):  # one read from the socket: 120 deliveries
        acker.delivered(tag)
    assert frames == []
    acker.flush()
    for tag in range(121, 1121):  # a long read: acked at 500 pending, before the window of 1000 fills
        acker.delivered(tag)
    acker.flush()
    acker.flush()  # nothing pending: no frame
    assert frames == [(120, True), (620, True), (1120, True)]
    assert totals == [120, 620, 1120]
    assert acker.acked == 1120


def test_ack_every_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="ack every"):
        Acker(lambda tag, multiple: None, 0, lambda total: None)


def test_marks_print_first_and_done_once() -> None:
    lines: list[str] = []
    marks = Marks(1000, lines.append)
    for acked in (120, 620, 1000, 1000):
        marks(acked)
    assert [line.split()[0] for line in lines] == ["first", "done"]
    assert all(float(line.split()[1]) > 0 for line in lines)


def test_confirms_settle_single_and_multiple_and_count_nacks() -> None:
    confirms = Confirms()
    for _ in range(6):
        confirms.published()
    assert confirms.unconfirmed == 6
    assert confirms.settle(2, multiple=False, nack=False) == 1
    assert confirms.settle(4, multiple=True, nack=False) == 3  # 1, 3, 4
    assert confirms.settle(4, multiple=True, nack=False) == 0  # already settled
    assert confirms.settle(6, multiple=True, nack=True) == 2  # 5, 6
    assert (confirms.confirmed, confirms.nacked, confirms.unconfirmed) == (6, 2, 0)


def test_jobs_are_persistent_json_with_ids_and_alternating_accounts() -> None:
    messages = job_messages("bench-x-", 3)
    assert [m[0] for m in messages] == ["bench-x-0000000", "bench-x-0000001", "bench-x-0000002"]
    for i, (message_id, body, props) in enumerate(messages):
        assert json.loads(body) == {"apikey": "bench", "account_uuid": ACCOUNTS[i % 2]}
        assert props.message_id == message_id
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"


def _result(key: str, seconds: float, rss: float = 30.0, messages: int = 10000) -> Result:
    return Result(key, worker_throughput.CONSUMERS[key], messages, seconds, 0.5, rss, 1.0, done=messages)


def test_b_over_a_is_measured_against_the_batch_acking_ceiling() -> None:
    results = {
        "raw": _result("raw", 1.0),
        "raw-each": _result("raw-each", 2.0),
        "worker": _result("worker", 1.25, rss=43.0),
        "seed": _result("seed", 20.0, messages=1000),
        "celery": _result("celery", 20.0),
    }
    rows = {name: (round(value, 3), goal, met) for name, value, goal, met in goals(results)}
    assert rows == {
        "b/a": (0.8, ">= 0.5", True),
        "CPU/msg b/a": (1.0, "<= 2", True),
        "b/c": (160.0, ">= 10", True),
        "b/d": (16.0, ">= 10", True),
        "b/a0": (1.6, "-", None),
        "worker peak RSS MB": (43.0, "<= 60", True),
    }


def test_table_keeps_its_columns_and_labels_say_which_reference_is_which() -> None:
    lines = table_lines({"raw": _result("raw", 2.0), "raw-each": _result("raw-each", 4.0)})
    assert lines[0] == (
        "consumer                                 messages  seconds    msgs/s peak RSS MB startup s  CPU s"
    )
    assert lines[1] == "-" * len(lines[0])
    assert lines[2].startswith("(a) raw pika, prefetch 1000, batch ack      10000     2.00    5000.0")
    assert lines[3].startswith("(a0) raw pika, prefetch 100, ack each       10000     4.00    2500.0")
    labels = list(worker_throughput.CONSUMERS.values())
    assert len({label.split(" ", 1)[0] for label in labels}) == len(labels)
    assert all(len(label) <= 40 for label in labels)


def test_median_of_runs_ignores_failed_runs_for_the_rate() -> None:
    failed = _result("worker", 1.0)
    failed.done = 10
    med = median_result([_result("worker", 1.0), _result("worker", 2.0), failed])
    assert med.ok
    assert med.rate == pytest.approx(7500.0)
    assert med.seconds == pytest.approx(1.5)


def test_cli_defaults_run_every_consumer_in_table_order() -> None:
    args = worker_throughput.parse_args([])
    assert args.only == ["raw", "raw-each", "worker", "worker-tls", "seed", "celery"]
    assert (args.n, args.repeat, args.png.name) == (10000, 1, "worker_throughput.png")
    with pytest.raises(SystemExit):
        worker_throughput.parse_args(["--only", "raw,nope"])
    assert args.db_rtt_ms == 0
    assert worker_throughput.parse_args(["--db-rtt-ms", "2"]).db_rtt_ms == 2.0
    with pytest.raises(SystemExit):
        worker_throughput.parse_args(["--db-rtt-ms", "-1"])


def test_the_consumers_database_url_can_point_at_a_relay_with_everything_else_kept() -> None:
    url = "postgresql://worker:p%40ss@127.0.0.1:5432/accounts?sslmode=disable"
    assert worker_throughput.database_address(url) == ("127.0.0.1", 5432)
    assert worker_throughput.database_address("postgresql://localhost/db") == ("localhost", 5432)
    assert (
        worker_throughput.with_address(url, "127.0.0.1:40111")
        == "postgresql://worker:p%40ss@127.0.0.1:40111/accounts?sslmode=disable"
    )
    assert worker_throughput.with_address("postgresql://h:1/db", "127.0.0.1:2") == "postgresql://127.0.0.1:2/db"


def test_baseline_src_adds_the_b0_row_after_the_worker_and_must_hold_the_package(tmp_path) -> None:
    (tmp_path / "account_worker").mkdir()
    args = worker_throughput.parse_args(["--only", "raw,worker,seed", "--baseline-src", str(tmp_path)])
    assert args.only == ["raw", "worker", "worker-base", "seed"]
    with pytest.raises(SystemExit):
        worker_throughput.parse_args(["--baseline-src", str(tmp_path / "nothing-here")])
    results = {"worker": _result("worker", 1.0), "worker-base": _result("worker-base", 1.25)}
    assert [(n, round(v, 2), met) for n, v, _, met in goals(results) if n == "b/b0"] == [
        ("b/b0", 1.25, None)
    ]  # b took 1.0 s, b0 1.25 s


def test_reference_a_acks_in_batches_within_its_window_and_a0_one_by_one() -> None:
    bench = object.__new__(worker_throughput.Bench)  # no broker: only the phase description
    bench.run_id, bench.amqp_url, bench.queues = "bench-t", "amqp://127.0.0.1/x", []
    a, a0 = bench.phase_raw(0, 10000), bench.phase_raw_each(0, 10000)
    assert a.command[1].endswith("raw_consumer.py")
    assert a.command[-3:] == ["10000", "1000", "500"]  # N, prefetch, ack every
    assert a0.command[-3:] == ["10000", "100", "1"]
    assert (a.label, a0.label) == (worker_throughput.CONSUMERS["raw"], worker_throughput.CONSUMERS["raw-each"])
    assert bench.queues == ["bench-t-r0-raw", "bench-t-r0-raw-each"]


def test_json_report_holds_runs_and_goals(tmp_path) -> None:
    run = {"raw": _result("raw", 1.0), "worker": _result("worker", 2.0)}
    write_json(tmp_path / "out" / "bench.json", [run], run)
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["runs"][0]["raw"]["rate"] == 10000.0
    assert data["goals"][0]["name"] == "b/a"
    assert math.isclose(data["goals"][0]["value"], 0.5)


def test_b_tls_is_the_worker_over_amqps_against_the_same_worker_over_amqp(monkeypatch) -> None:
    monkeypatch.delenv("BENCH_AMQPS_PORT", raising=False)
    assert (
        worker_throughput.amqps_url("amqp://app:p%40ss@127.0.0.1:5672/app") == "amqps://app:p%40ss@127.0.0.1:5671/app"
    )
    monkeypatch.setenv("BENCH_AMQPS_PORT", "46671")
    assert worker_throughput.amqps_url("amqp://a:b@localhost/app") == "amqps://a:b@localhost:46671/app"
    results = {"worker": _result("worker", 1.0), "worker-tls": _result("worker-tls", 1.25)}
    rows = {n: (round(v, 2), goal, met) for n, v, goal, met in goals(results)}
    assert rows["b-tls/b (AMQPS)"] == (0.8, ">= 0.85", False)  # 10000 msgs in 1.25 s against 1.0 s


def test_latency_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert latency.percentile(values, 0.5) == 50.0
    assert latency.percentile(values, 0.99) == 99.0
    assert latency.percentile(values, 1.0) == 100.0
    assert latency.percentile([7.0], 0.99) == 7.0


class _FakeBench:
    """Runs that return prepared results (or raise), and whether cleanup ran."""

    def __init__(self, runs: list[dict[str, Result] | Exception]) -> None:
        self.runs, self.cleaned = runs, False

    def run_once(self, rep: int) -> dict[str, Result]:
        run = self.runs[rep]
        if isinstance(run, Exception):
            raise run
        return run

    def cleanup(self) -> None:
        self.cleaned = True


def _args(tmp_path, repeat: int) -> argparse.Namespace:
    return argparse.Namespace(repeat=repeat, png=None, json=tmp_path / "bench.json")


def test_run_and_report_prints_each_run_and_the_median_and_reports_the_goals(tmp_path, capsys) -> None:
    runs = [{"raw": _result("raw", s), "worker": _result("worker", 2 * s)} for s in (1.0, 2.0, 4.0)]
    bench = _FakeBench(list(runs))
    rc = run_and_report(bench, _args(tmp_path, 3), 0.0, subtitle="N=10000", median_note=" (jobs)")
    out = capsys.readouterr().out
    assert rc == 0 and bench.cleaned
    assert [line for line in out.splitlines() if line.startswith("run ")] == ["run 1/3", "run 2/3", "run 3/3"]
    assert "median of 3 runs (jobs)" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["runs"]) == 3
    assert data["goals"][0]["name"] == "b/a"  # the worker bench's goals when none are given
    assert math.isclose(data["goals"][0]["value"], 0.5)


def test_run_and_report_uses_the_given_goal_rows_and_fails_on_an_incomplete_run(tmp_path, capsys) -> None:
    short = _result("worker", 1.0)
    short.done = 10
    bench = _FakeBench([{"worker": short}])
    rows = [("a jobs/s", 9.0, ">= 100", False)]
    rc = run_and_report(bench, _args(tmp_path, 1), 0.0, subtitle="N=1", goal_rows=lambda final: rows)
    assert rc == 1
    assert "a jobs/s" in capsys.readouterr().out
    assert json.loads((tmp_path / "bench.json").read_text())["goals"] == [
        {"name": "a jobs/s", "value": 9.0, "goal": ">= 100", "met": False}
    ]


def test_run_and_report_cleans_up_when_a_run_fails(tmp_path) -> None:
    bench = _FakeBench([RuntimeError("broker gone")])
    with pytest.raises(RuntimeError, match="broker gone"):
        run_and_report(bench, _args(tmp_path, 1), 0.0, subtitle="N=1")
    assert bench.cleaned


def test_cpu_seconds_counts_every_thread_finer_than_a_clock_tick() -> None:
    """The consumers' CPU column: this process's CPU as counted from /proc agrees with the kernel's own
    per-process clock, a thread that ended included, and is not rounded to 10 ms clock ticks."""
    stop = threading.Event()

    def burn(seconds: float, then_wait: bool) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass
        if then_wait:
            stop.wait()

    ended = threading.Thread(target=burn, args=(0.05, False))
    ended.start()
    ended.join()
    alive = threading.Thread(target=burn, args=(0.05, True))
    alive.start()
    time.sleep(0.2)
    try:
        counted, kernel = processes.cpu_seconds(os.getpid(), with_children=False), time.process_time()
    finally:
        stop.set()
        alive.join()
    assert abs(counted - kernel) < 0.03, (counted, kernel)
    ticks = counted * os.sysconf("SC_CLK_TCK")
    assert abs(ticks - round(ticks)) > 1e-9, f"{counted} s is a whole number of clock ticks"
