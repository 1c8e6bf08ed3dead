#!/usr/bin/env python3
"""Throughput and peak memory of the account worker against reference consumers.

One run, one broker, one database.  Each consumer gets its own fresh durable QUORUM
queue, holding N messages published beforehand (persistent, publisher confirms);
then the consumer process is started and timed until its last message is done:

  (a)  raw      bench/raw_consumer.py: the best plain pika consumer, the ceiling: prefetch
                1000, no work, one basic_ack(multiple=True) per batch (what has arrived,
                at most 500), as the worker acks (done = it acked the N-th message);
  (a0) raw-each bench/raw_consumer.py as (a) but prefetch 100 and one ack per message
                (shows what batch acks are worth; no goal);
  (b)  worker   the real account worker (python -m account_worker from worker/src),
                WORKER_DECLARE_TOPOLOGY=true on its bench queue, its defaults otherwise
                (done = all N message ids are in job_runs);
  (b-tls) worker-tls  the same worker, consuming over AMQPS (amqps:// on BENCH_AMQPS_PORT,
                default 5671, of the same broker, verified with BENCH_CA_FILE, default the
                sandbox CA); the queue is filled over plain AMQP as for (b), so only the
                worker's own connection differs (goal b-tls/b >= 0.85);
  (c)  seed     bench/seed_worker.py: basic_get loop, a new DB connection per message,
                ack in finally (N/10 messages by default; done as for b);
  (d)  celery   bench/celery_app.py: `celery worker` with default settings (prefork,
                concurrency = CPUs), tasks published with apply_async (done as for b).

throughput = messages / (time from spawning the consumer until its last message is
done), so start-up is included (the `startup s` column shows spawn -> first message
done).  Peak RSS = VmHWM from /proc/<pid>/status sampled during the run; for Celery the
sum over the main process and its pool children (which counts pages they share
copy-on-write once per process).  Goals: b >= 0.5 a (b/a is the worker's own overhead
over consuming and acking alone) with at most 2x (a)'s CPU seconds per message, b >= 10 c,
b >= 10 d, worker peak RSS <= 60 MB.

Then the latency row (--latency-n, default 300; 0 skips it): the worker of (b) with its defaults,
over AMQPS as deployed, on a queue of its own; record-only jobs with reply_to one at a time, publish
-> reply, p50/p90/p99/max after 10 of warm-up (bench/latency_trace.py's round_trips).  Goals: p50
<= 3 ms, p99 <= 10 ms.

Every queue/exchange it declares is named bench-<run>-*, every job_runs row it makes
has a message_id starting with bench-<run>-; all are deleted afterwards, as is the
delayed-delivery topology Celery declares for quorum queues (unless it was there before).

    .venv/bin/python bench/worker_throughput.py [--n N] [--repeat R] [--png reports/worker_throughput.png]

BENCH_AMQP_URL / BENCH_DATABASE_URL default to the sandbox (passwords in .sandbox/);
both must point at a loopback address.  WORKER_* variables of the caller's environment
are passed to the worker (b) unless the harness sets them itself, e.g.
`WORKER_PREFETCH=500 ... --only raw,worker` to try a setting.  --only, --seed-n,
--celery-n, --timeout and --json are for such experiments.  --db-rtt-ms puts the database
across a network for the consumers: they reach it through a relay in this process that adds
that round trip (bench/delayed_link.py); the harness itself still reads it directly.

Modules beside this entry point: endpoints.py (the sandbox's URLs), publishing.py (jobs
with confirms, the broker), processes.py (start, time, sample and stop one consumer),
report.py (table, goals, PNG, JSON); tests/support (importable as `support`) is shared with the live suites.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psycopg

import latency_trace
from account_worker import amqp as worker_amqp
from account_worker.config import Config
from delayed_link import DelayedLink
from endpoints import (
    amqps_url,
    database_address,
    default_amqp_url,
    default_ca_file,
    default_database_url,
    require_loopback,
    with_address,
)
from latency import latencies, percentile
from processes import Phase, measure
from publishing import Broker, Message, job_messages, publish_confirmed
from report import Result, run_and_report
from support.db import delete_rows

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = sys.executable

Messages = Callable[[str, int], list[Message]]  # (message id prefix, count) -> the jobs to publish

# key: row label, in the default order of --only
CONSUMERS = {
    "raw": "(a) raw pika, prefetch 1000, batch ack",
    "raw-each": "(a0) raw pika, prefetch 100, ack each",
    "worker": "(b) account worker",
    "worker-base": "(b0) account worker, --baseline-src",
    "worker-tls": "(b-tls) account worker over AMQPS",
    "seed": "(c) seed-style (basic_get, conn/msg)",
    "celery": "(d) Celery prefork (defaults)",
}
RAW_PREFETCH, RAW_ACK_EVERY = 1000, 500  # (a): ack before half the window is in flight
RAW_EACH_PREFETCH = 100  # (a0): the worker's default prefetch until 2026-12-05 (200 since), kept for comparison
LATENCY_WARMUP = 10  # jobs left out of the latency row (connections, caches)
LATENCY_GOALS_MS = {"p50": 3.0, "p99": 10.0}  # issue 22: one record-only job's round trip
CELERY_DELAYED_QUEUES = tuple(f"celery_delayed_{level}" for level in range(28))
CELERY_EXCHANGES = (
    *CELERY_DELAYED_QUEUES,
    "celery_delayed_delivery",
    "celeryev",
    "celery.pidbox",
    "reply.celery.pidbox",
)

# --------------------------------------------------------------------------- the consumers


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.amqp_url = default_amqp_url()
        self.database_url = default_database_url()
        require_loopback(self.amqp_url, "BENCH_AMQP_URL")
        require_loopback(self.database_url, "BENCH_DATABASE_URL")
        self.run_id = f"bench-{secrets.token_hex(3)}"
        self.logdir = Path(tempfile.mkdtemp(prefix=f"{self.run_id}-"))
        self.broker = Broker(self.amqp_url)
        self.db = psycopg.connect(self.database_url, autocommit=True, application_name="bench-harness")
        self.db_link: DelayedLink | None = None
        if getattr(args, "db_rtt_ms", 0) > 0:  # the consumers' way to the database, not the harness's
            self.db_link = DelayedLink(database_address(self.database_url), args.db_rtt_ms / 1000).start()
            self.database_url = with_address(self.database_url, self.db_link.address)
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.celery_preexisting: tuple[set[str], set[str]] | None = None

    # -- helpers

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_", "PYTHON"))}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def publish(self, queue: str, prefix: str, count: int, messages: Messages = job_messages) -> None:
        publish_confirmed(self.amqp_url, queue, messages(prefix, count))
        self.expect_ready(queue, count)

    def expect_ready(self, queue: str, count: int) -> None:
        ready = self.broker.ready(queue)
        if ready != count:
            raise RuntimeError(f"{queue}: {ready} messages ready after publishing {count}")
        time.sleep(self.args.settle)

    def drop_rows(self, prefix: str) -> None:
        delete_rows(self.db, prefix)

    # -- phases

    def _phase_raw(self, key: str, rep: int, n: int, prefetch: int, ack_every: int) -> Phase:
        queue = f"{self.run_id}-r{rep}-{key}"
        prefix = f"{queue}-"
        self.queues.append(queue)

        def prepare() -> None:
            self.broker.declare_quorum(queue)
            self.publish(queue, prefix, n)

        return Phase(
            key,
            CONSUMERS[key],
            n,
            queue,
            prefix,
            [PY, str(BENCH / "raw_consumer.py"), self.amqp_url, queue, str(n), str(prefetch), str(ack_every)],
            self.base_env(),
            "stdout",
            prepare=prepare,
            cleanup=lambda: self.broker.delete_queue(queue),
        )

    def phase_raw(self, rep: int, n: int) -> Phase:
        """(a) the ceiling: what the worker does to consume and ack, without the work."""
        return self._phase_raw("raw", rep, n, RAW_PREFETCH, RAW_ACK_EVERY)

    def phase_raw_each(self, rep: int, n: int) -> Phase:
        """(a0) one ack per message, as the benchmark's first (a) did."""
        return self._phase_raw("raw-each", rep, n, RAW_EACH_PREFETCH, 1)

    def phase_worker(
        self,
        rep: int,
        n: int,
        key: str = "worker",
        src: Path = ROOT / "worker" / "src",
        tls: bool = False,
        *,
        label: str = "",
        extra_env: Mapping[str, str] | None = None,
        messages: Messages = job_messages,
    ) -> Phase:
        """The worker on a fresh bench queue; `extra_env` (e.g. WORKER_ACTION) and `messages` (the jobs'
        builder) let other benchmarks (bench/ssh_throughput.py) time it with another action."""
        queue = f"{self.run_id}-r{rep}-{key}"
        prefix = f"{queue}-"
        dlx = f"{queue}.dlx"  # NOT the default jobs.dlx: the bench DLQ must not bind to production's exchange
        cfg = Config(
            amqp_urls=(self.amqp_url,),
            database_url=self.database_url,
            queue=queue,
            retry_queue=f"{queue}.retry",
            dead_letter_exchange=dlx,
        )
        self.queues += [queue, cfg.retry_queue, cfg.dead_letter_queue]
        self.exchanges.append(dlx)
        env = self.base_env() | {
            "PYTHONPATH": str(src),
            "WORKER_AMQP_URLS": self.amqp_url,
            "WORKER_DATABASE_URL": self.database_url,
            "WORKER_QUEUE": queue,
            "WORKER_DEAD_LETTER_EXCHANGE": dlx,
            "WORKER_DECLARE_TOPOLOGY": "true",
        }
        if tls:
            env |= {"WORKER_AMQP_URLS": amqps_url(self.amqp_url), "WORKER_AMQP_CA_FILE": default_ca_file()}
        env.update(extra_env or {})
        env.update({k: v for k, v in os.environ.items() if k.startswith("WORKER_") and k not in env})

        def prepare() -> None:
            worker_amqp.declare_topology(self.broker.channel(), cfg)  # exactly what the worker declares itself
            self.publish(queue, prefix, n, messages)

        def cleanup() -> None:
            dead = self.broker.ready(cfg.dead_letter_queue) + self.broker.ready(cfg.retry_queue)
            if dead:
                print(f"  note: worker dead-lettered/retried {dead} message(s)", file=sys.stderr)
            for name in (queue, cfg.retry_queue, cfg.dead_letter_queue):
                self.broker.delete_queue(name)
            self.broker.delete_exchange(dlx)
            self.drop_rows(prefix)

        return Phase(
            key,
            label or CONSUMERS[key],
            n,
            queue,
            prefix,
            [PY, "-m", "account_worker"],
            env,
            "db",
            prepare=prepare,
            cleanup=cleanup,
        )

    def phase_worker_base(self, rep: int, n: int) -> Phase:
        """(b0) the same measurement with another source tree of the worker (e.g. the code before a change)."""
        return self.phase_worker(rep, n, key="worker-base", src=self.args.baseline_src)

    def phase_worker_tls(self, rep: int, n: int) -> Phase:
        """(b-tls) the worker of (b), its connection over AMQPS to the same broker."""
        return self.phase_worker(rep, n, key="worker-tls", tls=True)

    def phase_seed(self, rep: int, n: int) -> Phase:
        queue = f"{self.run_id}-r{rep}-seed"
        prefix = f"{queue}-"
        self.queues.append(queue)

        def prepare() -> None:
            self.broker.declare_quorum(queue)
            self.publish(queue, prefix, n)

        def cleanup() -> None:
            self.broker.delete_queue(queue)
            self.drop_rows(prefix)

        return Phase(
            "seed",
            CONSUMERS["seed"],
            n,
            queue,
            prefix,
            [PY, str(BENCH / "seed_worker.py"), self.amqp_url, self.database_url, queue],
            self.base_env(),
            "db",
            prepare=prepare,
            cleanup=cleanup,
        )

    def phase_celery(
        self,
        rep: int,
        n: int,
        key: str = "celery",
        *,
        label: str = "",
        publish_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> Phase:
        """Celery's defaults on a fresh queue; `publish_args` (e.g. `ssh ACCOUNT`) go to celery_app.py publish."""
        queue = f"{self.run_id}-r{rep}-{key}"
        prefix = f"{queue}-"
        self.queues.append(queue)
        self.exchanges.append(queue)  # Celery's default exchange is named after the default queue
        node = f"{queue}@%h"
        env = self.base_env() | {
            "PYTHONPATH": str(BENCH),
            "BENCH_AMQP_URL": self.amqp_url,
            "BENCH_DATABASE_URL": self.database_url,
            "BENCH_CELERY_QUEUE": queue,
        }
        env.update(extra_env or {})
        if self.celery_preexisting is None:
            self.celery_preexisting = (
                {q for q in CELERY_DELAYED_QUEUES if self.broker.queue_exists(q)},
                {e for e in CELERY_EXCHANGES if self.broker.exchange_exists(e)},
            )

        def prepare() -> None:
            proc = subprocess.run(
                [PY, str(BENCH / "celery_app.py"), "publish", prefix, str(n), *publish_args],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"celery publish failed: {proc.stderr[-2000:]}")
            self.expect_ready(queue, n)

        def cleanup() -> None:
            self.broker.delete_queue(queue)
            self.broker.delete_exchange(queue)
            self.delete_celery_topology()  # so that every repeat starts Celery from the same state
            self.drop_rows(prefix)

        return Phase(
            key,
            label or CONSUMERS[key],
            n,
            queue,
            prefix,
            [PY, "-m", "celery", "-A", "celery_app", "worker", "-n", node],
            env,
            "db",
            children=True,
            prepare=prepare,
            cleanup=cleanup,
        )

    # -- run

    # What a job is called in the progress lines.
    unit = "msgs"

    def phase_builders(self) -> dict[str, tuple[Callable[[int, int], Phase], int]]:
        """Each consumer's phase builder (rep, count) and its message count."""
        n = self.args.n
        return {
            "raw": (self.phase_raw, n),
            "raw-each": (self.phase_raw_each, n),
            "worker": (self.phase_worker, n),
            "worker-base": (self.phase_worker_base, n),
            "worker-tls": (self.phase_worker_tls, n),
            "seed": (self.phase_seed, self.args.seed_n or max(50, n // 10)),
            "celery": (self.phase_celery, self.args.celery_n or n),
        }

    def run_once(self, rep: int) -> dict[str, Result]:
        builders = self.phase_builders()
        results: dict[str, Result] = {}
        for key in self.args.only:
            build, count = builders[key]
            phase = build(rep, count)
            try:
                t = time.monotonic()
                phase.prepare()
                prep = time.monotonic() - t
                res = measure(phase, self.db, self.logdir, self.args.timeout, ROOT)
                print(
                    f"  [{rep + 1}] {phase.label}: {res.messages} {self.unit} in {res.seconds:.2f}s "
                    f"(published in {prep:.1f}s) {res.note}",
                    file=sys.stderr,
                    flush=True,
                )
                results[key] = res
            finally:
                phase.cleanup()
        return results

    def delete_celery_topology(self) -> None:
        """Celery's delayed-delivery/pidbox/event queues and exchanges, unless they predate this run."""
        if self.celery_preexisting is None:
            return
        queues_before, exchanges_before = self.celery_preexisting
        for q in CELERY_DELAYED_QUEUES:
            if q not in queues_before:
                self.broker.delete_queue(q)
        for e in CELERY_EXCHANGES:
            if e not in exchanges_before:
                self.broker.delete_exchange(e)

    def cleanup(self) -> None:
        """Delete everything this run may have left (idempotent)."""
        for queue in self.queues:
            self.broker.delete_queue(queue)
        for exchange in self.exchanges:
            self.broker.delete_exchange(exchange)
        self.delete_celery_topology()
        with contextlib.suppress(Exception):
            delete_rows(self.db, self.run_id + "-")
        if self.db_link is not None:
            self.db_link.close()
        self.broker.close()
        self.db.close()


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="messages for (a), (a0), (b) and (d) (default 10000)")
    parser.add_argument("--seed-n", type=int, default=0, help="messages for the seed worker (default N/10)")
    parser.add_argument("--celery-n", type=int, default=0, help="messages for Celery (default N)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the medians are reported (default 1)")
    parser.add_argument(
        "--only",
        default=",".join(k for k in CONSUMERS if k != "worker-base"),
        help="comma-separated subset, in order (worker-base is added after worker by --baseline-src)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also measure (b0): the worker from this src folder (e.g. a checkout of the code before a change)",
    )
    parser.add_argument(
        "--db-rtt-ms",
        type=float,
        default=0.0,
        help="the consumers reach PostgreSQL across this round trip, through a delaying relay (default 0: directly)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="per consumer, seconds (default 90)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after publishing, seconds (default 1)")
    parser.add_argument(
        "--latency-n",
        type=int,
        default=300,
        help="then time this many record-only jobs one at a time, publish -> reply (default 300; 0: skip)",
    )
    parser.add_argument("--png", type=Path, default=ROOT / "reports" / "worker_throughput.png")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.baseline_src and "worker-base" not in args.only:
        at = args.only.index("worker") + 1 if "worker" in args.only else len(args.only)
        args.only.insert(at, "worker-base")
    if "worker-base" in args.only and not (args.baseline_src and (args.baseline_src / "account_worker").is_dir()):
        parser.error("worker-base needs --baseline-src pointing at a folder holding account_worker/")
    unknown = set(args.only) - set(CONSUMERS)
    if unknown or args.n < 1 or args.repeat < 1 or not 0 <= args.db_rtt_ms <= 1000:
        parser.error(f"bad --only {sorted(unknown)} / --n / --repeat / --db-rtt-ms")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    started = time.monotonic()
    passed = ", ".join(sorted(k for k in os.environ if k.startswith("WORKER_")))
    print(
        f"run {bench.run_id}: N={args.n}, repeat={args.repeat}, database RTT +{args.db_rtt_ms:g} ms, "
        f"logs in {bench.logdir}" + (f"; the worker also gets {passed} from the environment" if passed else ""),
        file=sys.stderr,
    )
    status = run_and_report(bench, args, started, subtitle=f"N={args.n}")
    if args.latency_n > 0:
        print_latency(args.latency_n)
    return status


def print_latency(count: int) -> None:
    """The latency row: the worker (b), its defaults, over AMQPS as deployed, on a queue of its own; record-only
    jobs with reply_to one at a time (the next published once the reply is in), as bench/latency.py does."""
    timed, _ = latency_trace.round_trips(count, LATENCY_WARMUP, None, stamped=False)
    values = latencies(timed, LATENCY_WARMUP)
    p50, p90, p99 = (percentile(values, f) for f in (0.5, 0.9, 0.99))
    print(
        f"\n(b) latency, record-only, publish -> reply, one at a time over AMQPS, {len(values)} jobs: "
        f"p50 {p50:.2f} ms, p90 {p90:.2f}, p99 {p99:.2f}, max {max(values):.2f}"
    )
    for name, value, goal in (("p50", p50, LATENCY_GOALS_MS["p50"]), ("p99", p99, LATENCY_GOALS_MS["p99"])):
        verdict = "met" if value <= goal else "NOT MET"
        print(f"{'latency ' + name + ' ms':<20} {value:8.2f}   goal <= {goal:g}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
