#!/usr/bin/env python3
"""Where one job's round trip goes: the worker's stages, stamped, for record-only jobs one at a time.

Starts the account worker from worker/src on this machine with its hand-offs stamped
(bench/trace_stamps.py), on a temporary quorum queue of the sandbox's broker (over AMQPS, as the
sandbox's workers consume) and the sandbox's database, then publishes record-only jobs one at a
time with `reply_to`, as bench/latency.py does, and prints the median time from each stage to the
next: the broker's way in (publish -> the worker's I/O thread), each hand-off inside the worker,
the database's commit, and the broker's way out (the reply published -> the client has it).

    .venv/bin/python bench/latency_trace.py [--count 300] [--concurrency 4]

BENCH_AMQP_URL / BENCH_DATABASE_URL as for bench/worker_throughput.py (the sandbox by default,
loopback only).  Queues, the exchange and the job_runs rows it makes are named trace-<run>-* and
deleted afterwards.  The stamps cost a few microseconds each; the total is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from account_worker import amqp as worker_amqp
from account_worker.config import Config
from endpoints import amqps_url, default_amqp_url, default_ca_file, default_database_url, require_loopback
from latency import connect, percentile, time_jobs
from publishing import ACCOUNTS, APIKEY, job_body
from support.db import delete_rows
from trace_stamps import STAGES

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("published", *STAGES, "reply_received")
STARTER = "import sys, trace_stamps; trace_stamps.install(); from account_worker.main import main; sys.exit(main())"


def report(timed: list[tuple[str, float, float]], stamps: list[list[Any]], warmup: int) -> None:
    by_id: dict[str, dict[str, float]] = {}
    for stage, message_id, at in stamps:
        by_id.setdefault(message_id, {}).setdefault(stage, at)
    steps: dict[str, list[float]] = {stage: [] for stage in ORDER[1:]}
    totals: list[float] = []
    # The round trip in three parts: the broker's way in, the worker, the broker's way out.
    spans = {
        "broker in (published -> io_received)": ("published", "io_received"),
        "worker (io_received -> reply_started)": ("io_received", "reply_started"),
        "broker out (reply_started -> reply_received)": ("reply_started", "reply_received"),
    }
    parts: dict[str, list[float]] = {label: [] for label in spans}
    for message_id, published, received in timed[warmup:]:
        seen = by_id.get(message_id, {}) | {"published": published, "reply_received": received}
        totals.append((received - published) * 1000)
        previous = "published"
        for stage in ORDER[1:]:
            if stage in seen:
                steps[stage].append((seen[stage] - seen[previous]) * 1000)
                previous = stage
        for label, (start, end) in spans.items():
            if start in seen and end in seen:
                parts[label].append((seen[end] - seen[start]) * 1000)
    print(f"| {len(totals)} record-only jobs | p50 ms | mean ms |")
    print("|---|---:|---:|")
    for stage in ORDER[1:]:
        if steps[stage]:
            print(f"| -> {stage} | {statistics.median(steps[stage]):.3f} | {statistics.mean(steps[stage]):.3f} |")
    for label, values in parts.items():
        if values:
            print(f"| {label} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} |")
    print(
        f"| round trip (p90 {percentile(totals, 0.9):.2f}, p99 {percentile(totals, 0.99):.2f}) "
        f"| {statistics.median(totals):.2f} | {statistics.mean(totals):.2f} |"
    )


def round_trips(
    count: int, warmup: int, concurrency: int | None, *, stamped: bool
) -> tuple[list[tuple[str, float, float]], list[list[Any]]]:
    """Start a worker from worker/src (stamped or not) on a temporary queue of the sandbox, time `warmup + count`
    record-only jobs one at a time (latency.time_jobs); (message id, published, reply received) per job, and the
    stamps (empty unless stamped).  `concurrency` None keeps the worker's default."""
    amqp_url = amqps_url(default_amqp_url())
    database_url = default_database_url()
    require_loopback(amqp_url, "BENCH_AMQP_URL")
    require_loopback(database_url, "BENCH_DATABASE_URL")
    ca_file = default_ca_file()
    run = f"trace-{secrets.token_hex(3)}"
    cfg = Config(
        amqp_urls=(amqp_url,),
        database_url=database_url,
        queue=run,
        retry_queue=f"{run}.retry",
        dead_letter_exchange=f"{run}.dlx",
    )
    stamps_file = Path(tempfile.mkdtemp(prefix=f"{run}-")) / "stamps.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_", "PYTHON"))} | {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "worker" / "src"), str(ROOT / "bench")]),
        "TRACE_STAMPS": str(stamps_file),
        "WORKER_AMQP_URLS": amqp_url,
        "WORKER_AMQP_CA_FILE": ca_file,
        "WORKER_DATABASE_URL": database_url,
        "WORKER_QUEUE": run,
        "WORKER_DEAD_LETTER_EXCHANGE": cfg.dead_letter_exchange,
        "WORKER_DECLARE_TOPOLOGY": "true",
        "WORKER_APIKEY": APIKEY,
    }
    if concurrency is not None:
        env["WORKER_CONCURRENCY"] = str(concurrency)
    command = [sys.executable, "-c", STARTER] if stamped else [sys.executable, "-m", "account_worker"]
    conn = connect(amqp_url, ca_file)
    channel = conn.channel()
    worker_amqp.declare_topology(channel, cfg)
    log = stamps_file.with_name("worker.log")
    with log.open("w") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not channel.queue_declare(run, passive=True).method.consumer_count:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start consuming; its log: {log}")
            time.sleep(0.1)
        body = job_body(ACCOUNTS[0], APIKEY)
        timed = time_jobs(conn, "", run, body, count + warmup, timeout=10.0, id_prefix=f"{run}-")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        for name in (run, cfg.retry_queue, cfg.dead_letter_queue):
            channel.queue_delete(name)
        channel.exchange_delete(cfg.dead_letter_exchange)
        conn.close()
        with psycopg.connect(database_url, autocommit=True) as db:
            delete_rows(db, run + "-")
    stamps = json.loads(stamps_file.read_text(encoding="utf-8")) if stamped else []
    return timed, stamps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="jobs timed (default 300)")
    parser.add_argument("--warmup", type=int, default=10, help="jobs left out first (default 10)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="WORKER_CONCURRENCY (default 4: above 1, jobs pass through the action pool)",
    )
    args = parser.parse_args()
    timed, stamps = round_trips(args.count, args.warmup, args.concurrency, stamped=True)
    report(timed, stamps, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
