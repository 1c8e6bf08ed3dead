#!/usr/bin/env python3
"""Throughput and peak memory of the account worker against three reference consumers.

One run, one broker, one database.  Each consumer gets its own fresh durable QUORUM
queue, holding N messages published beforehand (persistent, publisher confirms);
then the consumer process is started and timed until its last message is done:

  (a) raw      bench/raw_consumer.py: pika, prefetch 100, ack per message, no work
               (done = it acked the N-th message);
  (b) worker   the real account worker (python -m account_worker from worker/src),
               WORKER_DECLARE_TOPOLOGY=true on its bench queue, its defaults otherwise
               (done = all N message ids are in job_runs);
  (c) seed     bench/seed_worker.py: basic_get loop, a new DB connection per message,
               ack in finally (N/10 messages by default; done as for b);
  (d) celery   bench/celery_app.py: `celery worker` with default settings (prefork,
               concurrency = CPUs), tasks published with apply_async (done as for b).

throughput = messages / (time from spawning the consumer until its last message is
done), so start-up is included (the `startup s` column shows spawn -> first message
done).  Peak RSS = VmHWM from /proc/<pid>/status sampled during the run; for Celery the
sum over the main process and its pool children (which counts pages they share
copy-on-write once per process).  Goals: b >= 0.6 a, b >= 10 c, b >= 3 d, worker peak
RSS <= 60 MB.

Every queue/exchange it declares is named bench-<run>-*, every job_runs row it makes
has a message_id starting with bench-<run>-; all are deleted afterwards, as is the
delayed-delivery topology Celery declares for quorum queues (unless it was there before).

    .venv/bin/python bench/worker_throughput.py [--n N] [--repeat R] [--png reports/worker_throughput.png]

BENCH_AMQP_URL / BENCH_DATABASE_URL default to the sandbox (passwords in .sandbox/);
both must point at a loopback address.  WORKER_* variables of the caller's environment
are passed to the worker (b) unless the harness sets them itself, e.g.
`WORKER_PREFETCH=500 ... --only raw,worker` to try a setting.  --only, --seed-n,
--celery-n, --timeout and --json are for such experiments.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions
import psycopg

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORKER_SRC = ROOT / "files" / "worker" / "src"
SANDBOX = ROOT / ".sandbox"
PY = sys.executable

GOAL_VS_RAW = 0.6
GOAL_VS_SEED = 10.0
GOAL_VS_CELERY = 3.0
GOAL_RSS_MB = 60.0
POLL = 0.025  # seconds between "done?" checks
RSS_EVERY = 4  # sample memory every RSS_EVERY polls (and once at the end)
ACCOUNTS = ("1234", "5678")  # seeded in the sandbox database
CELERY_DELAYED_QUEUES = tuple(f"celery_delayed_{level}" for level in range(28))
CELERY_EXCHANGES = (
    *CELERY_DELAYED_QUEUES,
    "celery_delayed_delivery",
    "celeryev",
    "celery.pidbox",
    "reply.celery.pidbox",
)

sys.path.insert(0, str(WORKER_SRC))
from account_worker import amqp as worker_amqp  # noqa: E402
from account_worker.config import Config  # noqa: E402

# --------------------------------------------------------------------------- settings


def _sandbox_secret(name: str) -> str:
    return (SANDBOX / name).read_text(encoding="utf-8").strip()


def default_amqp_url() -> str:
    return os.environ.get("BENCH_AMQP_URL") or (
        f"amqp://app:{quote(_sandbox_secret('rabbitmq_app_password'), safe='')}@127.0.0.1:5672/app"
    )


def default_database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or (
        f"postgresql://worker:{quote(_sandbox_secret('postgresql_worker_password'), safe='')}@127.0.0.1:5432/accounts"
    )


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"{what} must point at a loopback address, got host {host!r}")


# --------------------------------------------------------------------------- broker helpers


def job_messages(prefix: str, count: int) -> list[tuple[str, bytes, pika.BasicProperties]]:
    """(message_id, body, properties) of `count` persistent jobs in the worker's format."""
    out = []
    for i in range(count):
        message_id = f"{prefix}{i:07d}"
        body = json.dumps({"apikey": "bench", "account_uuid": ACCOUNTS[i % 2]}, separators=(",", ":")).encode()
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent, message_id=message_id
        )
        out.append((message_id, body, props))
    return out


def publish_confirmed(
    url: str,
    queue: str,
    messages: Sequence[tuple[str, bytes, pika.BasicProperties]],
    window: int = 1000,
    timeout: float = 120.0,
) -> None:
    """Publish to `queue` on the default exchange with up to `window` unconfirmed; all must be acked."""
    total = len(messages)
    state = {"sent": 0, "confirmed": 0, "nacked": 0, "low": 1}
    errors: list[str] = []
    pending: set[int] = set()
    holder: dict[str, object] = {}

    def pump() -> None:
        channel = holder["channel"]
        while state["sent"] < total and state["sent"] - state["confirmed"] < window:
            _, body, props = messages[state["sent"]]
            channel.basic_publish("", queue, body, props)  # type: ignore[attr-defined]
            state["sent"] += 1
            pending.add(state["sent"])

    def on_confirm(frame: pika.frame.Method) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            done = [t for t in range(state["low"], tag + 1) if t in pending]
        else:
            done = [tag] if tag in pending else []
        for t in done:
            pending.discard(t)
        while state["low"] <= state["sent"] and state["low"] not in pending:
            state["low"] += 1
        state["confirmed"] += len(done)
        if isinstance(method, pika.spec.Basic.Nack):
            state["nacked"] += len(done)
        if state["confirmed"] >= total:
            holder["conn"].close()  # type: ignore[attr-defined]
        else:
            pump()

    def on_channel(channel: object) -> None:
        holder["channel"] = channel
        channel.add_on_close_callback(lambda ch, reason: fail(f"channel closed: {reason}"))  # type: ignore[attr-defined]
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _frame: pump())  # type: ignore[attr-defined]

    def fail(message: str) -> None:
        if state["confirmed"] < total:
            errors.append(message)
        conn = holder.get("conn")
        if conn is not None and conn.is_open:  # type: ignore[attr-defined]
            conn.close()  # type: ignore[attr-defined]

    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, exc: (errors.append(f"connect: {exc!r}"), c.ioloop.stop()),
        on_close_callback=lambda c, reason: c.ioloop.stop(),
    )
    holder["conn"] = conn
    conn.ioloop.call_later(timeout, lambda: fail(f"timeout after {timeout}s"))
    conn.ioloop.start()
    if errors or state["nacked"] or state["confirmed"] < total:
        raise RuntimeError(f"publish to {queue} failed: {errors or state}")


class Broker:
    """A blocking connection for declarations, counts and clean-up."""

    def __init__(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = 0  # idle for minutes between calls; loopback only
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()

    def _ch(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def declare_quorum(self, queue: str) -> None:
        self._ch().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})

    def declare_worker_topology(self, cfg: Config) -> None:
        worker_amqp.declare_topology(self._ch(), cfg)  # exactly what the worker declares itself

    def ready(self, queue: str) -> int:
        return self._ch().queue_declare(queue, passive=True).method.message_count

    def queue_exists(self, queue: str) -> bool:
        try:
            self._ch().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def exchange_exists(self, exchange: str) -> bool:
        try:
            self._ch().exchange_declare(exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def delete_queue(self, queue: str) -> None:
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            self._ch().queue_delete(queue)

    def delete_exchange(self, exchange: str) -> None:
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            self._ch().exchange_delete(exchange)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


# --------------------------------------------------------------------------- process helpers


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


class PeakRss:
    """Max VmHWM per process of a tree (main + its direct children), summed."""

    def __init__(self, pid: int, with_children: bool) -> None:
        self.pid = pid
        self.with_children = with_children
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        pids = [self.pid, *(_children(self.pid) if self.with_children else [])]
        for pid in pids:
            kb = _vmhwm_kb(pid)
            if kb > self.peaks.get(pid, 0):
                self.peaks[pid] = kb

    @property
    def mb(self) -> float:
        return sum(self.peaks.values()) / 1024.0


def cpu_seconds(pid: int, with_children: bool) -> float:
    """user + system CPU of the process (and its live direct children), from /proc/<pid>/stat."""
    total = 0
    for p in [pid, *(_children(pid) if with_children else [])]:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, ValueError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL its own process group (started with start_new_session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


# --------------------------------------------------------------------------- one measurement


@dataclass
class Result:
    key: str
    label: str
    messages: int
    seconds: float = float("nan")
    startup: float = float("nan")
    rss_mb: float = float("nan")
    cpu: float = float("nan")
    done: int = 0
    note: str = ""
    median_rate: float | None = None  # set on the median of several runs

    @property
    def ok(self) -> bool:
        return self.done == self.messages

    @property
    def rate(self) -> float:
        if self.median_rate is not None:
            return self.median_rate
        return self.messages / self.seconds if self.ok and self.seconds > 0 else float("nan")


@dataclass
class Phase:
    key: str
    label: str
    messages: int
    queue: str
    prefix: str
    command: list[str]
    env: dict[str, str]
    done_by: str  # "stdout" or "db"
    children: bool = False
    prepare: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    extra: dict[str, object] = field(default_factory=dict)


def count_done(db: psycopg.Connection, prefix: str) -> int:
    return db.execute("SELECT count(*) FROM job_runs WHERE message_id LIKE %s", (prefix + "%",)).fetchone()[0]


def measure(phase: Phase, db: psycopg.Connection, logdir: Path, timeout: float) -> Result:
    result = Result(phase.key, phase.label, phase.messages)
    log_path = logdir / f"{phase.key}.log"
    marks: dict[str, float] = {}

    with open(log_path, "wb") as log:
        start = time.monotonic()
        proc = subprocess.Popen(
            phase.command,
            env=phase.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if phase.done_by == "stdout" else log,
            stderr=log,
            start_new_session=True,
        )
        reader = None
        if phase.done_by == "stdout":

            def read() -> None:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    word, _, value = raw.decode(errors="replace").strip().partition(" ")
                    if word in ("first", "done"):
                        marks[word] = float(value)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
        rss = PeakRss(proc.pid, phase.children)
        deadline = start + timeout
        polls = 0
        try:
            while True:
                now = time.monotonic()
                if phase.done_by == "db":
                    result.done = count_done(db, phase.prefix)
                    now = time.monotonic()
                    if result.done and "first" not in marks:
                        marks["first"] = now
                    if result.done >= phase.messages:
                        marks["done"] = now
                elif "done" in marks:
                    result.done = phase.messages
                if polls % RSS_EVERY == 0:
                    rss.sample()
                polls += 1
                if "done" in marks:
                    break
                if proc.poll() is not None:
                    result.note = f"exited early (rc {proc.returncode}), see {log_path}"
                    break
                if now > deadline:
                    result.note = f"timeout after {timeout:.0f}s ({result.done}/{phase.messages} done)"
                    break
                time.sleep(POLL)
            rss.sample()
            result.cpu = cpu_seconds(proc.pid, phase.children)
        finally:
            rc = stop_process(proc)
            if reader is not None:
                reader.join(2)
    if "done" in marks:
        result.seconds = marks["done"] - start
    if "first" in marks:
        result.startup = marks["first"] - start
    result.rss_mb = rss.mb
    if rc not in (0, None) and not result.note and phase.key != "celery":
        result.note = f"exit code {rc}"
    return result


# --------------------------------------------------------------------------- the four consumers


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
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.celery_preexisting: tuple[set[str], set[str]] | None = None

    # -- helpers

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_", "PYTHON"))}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def publish(self, queue: str, prefix: str, count: int) -> None:
        publish_confirmed(self.amqp_url, queue, job_messages(prefix, count))
        self.expect_ready(queue, count)

    def expect_ready(self, queue: str, count: int) -> None:
        ready = self.broker.ready(queue)
        if ready != count:
            raise RuntimeError(f"{queue}: {ready} messages ready after publishing {count}")
        time.sleep(self.args.settle)

    def drop_rows(self, prefix: str) -> None:
        self.db.execute("DELETE FROM job_runs WHERE message_id LIKE %s", (prefix + "%",))

    # -- phases

    def phase_raw(self, rep: int, n: int) -> Phase:
        queue = f"{self.run_id}-r{rep}-raw"
        prefix = f"{queue}-"
        self.queues.append(queue)

        def prepare() -> None:
            self.broker.declare_quorum(queue)
            self.publish(queue, prefix, n)

        return Phase(
            "raw",
            "(a) raw pika consume+ack",
            n,
            queue,
            prefix,
            [PY, str(BENCH / "raw_consumer.py"), self.amqp_url, queue, str(n), "100"],
            self.base_env(),
            "stdout",
            prepare=prepare,
            cleanup=lambda: self.broker.delete_queue(queue),
        )

    def phase_worker(self, rep: int, n: int) -> Phase:
        queue = f"{self.run_id}-r{rep}-worker"
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
            "PYTHONPATH": str(WORKER_SRC),
            "WORKER_AMQP_URLS": self.amqp_url,
            "WORKER_DATABASE_URL": self.database_url,
            "WORKER_QUEUE": queue,
            "WORKER_DEAD_LETTER_EXCHANGE": dlx,
            "WORKER_DECLARE_TOPOLOGY": "true",
        }
        env.update({k: v for k, v in os.environ.items() if k.startswith("WORKER_") and k not in env})

        def prepare() -> None:
            self.broker.declare_worker_topology(cfg)
            self.publish(queue, prefix, n)

        def cleanup() -> None:
            dead = self.broker.ready(cfg.dead_letter_queue) + self.broker.ready(cfg.retry_queue)
            if dead:
                print(f"  note: worker dead-lettered/retried {dead} message(s)", file=sys.stderr)
            for name in (queue, cfg.retry_queue, cfg.dead_letter_queue):
                self.broker.delete_queue(name)
            self.broker.delete_exchange(dlx)
            self.drop_rows(prefix)

        return Phase(
            "worker",
            "(b) account worker",
            n,
            queue,
            prefix,
            [PY, "-m", "account_worker"],
            env,
            "db",
            prepare=prepare,
            cleanup=cleanup,
        )

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
            "(c) seed-style (basic_get, conn/msg)",
            n,
            queue,
            prefix,
            [PY, str(BENCH / "seed_worker.py"), self.amqp_url, self.database_url, queue],
            self.base_env(),
            "db",
            prepare=prepare,
            cleanup=cleanup,
        )

    def phase_celery(self, rep: int, n: int) -> Phase:
        queue = f"{self.run_id}-r{rep}-celery"
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
        if self.celery_preexisting is None:
            self.celery_preexisting = (
                {q for q in CELERY_DELAYED_QUEUES if self.broker.queue_exists(q)},
                {e for e in CELERY_EXCHANGES if self.broker.exchange_exists(e)},
            )

        def prepare() -> None:
            proc = subprocess.run(
                [PY, str(BENCH / "celery_app.py"), "publish", prefix, str(n)],
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
            "celery",
            "(d) Celery prefork (defaults)",
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

    def run_once(self, rep: int) -> dict[str, Result]:
        n = self.args.n
        builders = {
            "raw": (self.phase_raw, n),
            "worker": (self.phase_worker, n),
            "seed": (self.phase_seed, self.args.seed_n or max(50, n // 10)),
            "celery": (self.phase_celery, self.args.celery_n or n),
        }
        results: dict[str, Result] = {}
        for key in self.args.only:
            build, count = builders[key]
            phase = build(rep, count)
            try:
                t = time.monotonic()
                phase.prepare()
                prep = time.monotonic() - t
                res = measure(phase, self.db, self.logdir, self.args.timeout)
                print(
                    f"  [{rep + 1}] {phase.label}: {res.messages} msgs in {res.seconds:.2f}s "
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
            self.db.execute("DELETE FROM job_runs WHERE message_id LIKE %s", (self.run_id + "-%",))
        self.broker.close()
        self.db.close()


# --------------------------------------------------------------------------- report


def median_result(runs: list[Result]) -> Result:
    first = runs[0]
    good = [r for r in runs if r.ok] or runs
    med = Result(first.key, first.label, first.messages)
    med.seconds = statistics.median(r.seconds for r in good)
    med.startup = statistics.median(r.startup for r in good)
    med.rss_mb = statistics.median(r.rss_mb for r in runs)
    med.cpu = statistics.median(r.cpu for r in runs)
    med.done = first.messages if any(r.ok for r in runs) else first.done
    rates = [r.rate for r in good if r.ok]
    med.median_rate = statistics.median(rates) if rates else float("nan")
    return med


def print_table(results: dict[str, Result], title: str) -> None:
    print(f"\n{title}")
    header = (
        f"{'consumer':<40} {'messages':>8} {'seconds':>8} {'msgs/s':>9} {'peak RSS MB':>11} "
        f"{'startup s':>9} {'CPU s':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        print(
            f"{r.label:<40} {r.messages:>8} {r.seconds:>8.2f} {r.rate:>9.1f} {r.rss_mb:>11.1f} "
            f"{r.startup:>9.2f} {r.cpu:>6.2f}{'  ' + r.note if r.note else ''}"
        )


def goals(results: dict[str, Result]) -> list[tuple[str, float, str, bool]]:
    rows = []
    b = results.get("worker")
    if b is None:
        return rows
    rb = b.rate
    for key, name, goal in (
        ("raw", "b/a", GOAL_VS_RAW),
        ("seed", "b/c", GOAL_VS_SEED),
        ("celery", "b/d", GOAL_VS_CELERY),
    ):
        if key in results:
            ratio = rb / results[key].rate
            rows.append((name, ratio, f">= {goal:g}", ratio >= goal))
    rows.append(("worker peak RSS MB", b.rss_mb, f"<= {GOAL_RSS_MB:g}", b.rss_mb <= GOAL_RSS_MB))
    return rows


def print_goals(results: dict[str, Result]) -> None:
    print()
    for name, value, goal, met in goals(results):
        print(f"{name:<20} {value:>8.2f}   goal {goal:<7} {'met' if met else 'NOT MET'}")


def plot(results: dict[str, Result], path: Path, subtitle: str) -> None:
    import matplotlib  # noqa: PLC0415 - only when plotting; the backend must be set before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = [r.label.split(" ", 1)[0] + "\n" + r.key for r in results.values()]
    rates = [r.rate for r in results.values()]
    rss = [r.rss_mb for r in results.values()]
    colors = ["#999999" if r.key != "worker" else "#1f77b4" for r in results.values()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    bars = ax1.bar(labels, rates, color=colors)
    ax1.set_yscale("log")
    ax1.set_ylabel("messages / s (log)")
    ax1.set_title("throughput")
    ax1.bar_label(bars, labels=[f"{v:,.0f}" for v in rates], fontsize=8)
    text = "\n".join(
        f"{name} = {value:.2f}  (goal {goal}: {'met' if met else 'NOT met'})"
        for name, value, goal, met in goals(results)
        if "/" in name
    )
    if text:
        ax1.text(
            0.98,
            0.97,
            text,
            transform=ax1.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        )
    bars = ax2.bar(labels, rss, color=colors)
    ax2.axhline(GOAL_RSS_MB, color="red", linestyle="--", linewidth=1, label=f"worker goal {GOAL_RSS_MB:g} MB")
    ax2.set_ylabel("peak RSS MB (VmHWM)")
    ax2.set_title("memory")
    ax2.legend(fontsize=8)
    ax2.bar_label(bars, labels=[f"{v:.0f}" for v in rss], fontsize=8)
    fig.suptitle(f"account worker vs reference consumers  ({subtitle})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="messages for raw, worker and celery (default 10000)")
    parser.add_argument("--seed-n", type=int, default=0, help="messages for the seed worker (default N/10)")
    parser.add_argument("--celery-n", type=int, default=0, help="messages for Celery (default N)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the medians are reported (default 1)")
    parser.add_argument("--only", default="raw,worker,seed,celery", help="comma-separated subset, in order")
    parser.add_argument("--timeout", type=float, default=90.0, help="per consumer, seconds (default 90)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after publishing, seconds (default 1)")
    parser.add_argument("--png", type=Path, default=ROOT / "reports" / "worker_throughput.png")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(args.only) - {"raw", "worker", "seed", "celery"}
    if unknown or args.n < 1 or args.repeat < 1:
        parser.error(f"bad --only {sorted(unknown)} / --n / --repeat")

    bench = Bench(args)
    started = time.monotonic()
    passed = ", ".join(sorted(k for k in os.environ if k.startswith("WORKER_")))
    print(
        f"run {bench.run_id}: N={args.n}, repeat={args.repeat}, logs in {bench.logdir}"
        + (f"; the worker also gets {passed} from the environment" if passed else ""),
        file=sys.stderr,
    )
    runs: list[dict[str, Result]] = []
    try:
        for rep in range(args.repeat):
            runs.append(bench.run_once(rep))
    finally:
        bench.cleanup()

    for i, res in enumerate(runs):
        print_table(res, f"run {i + 1}/{len(runs)}")
    final = runs[0]
    if len(runs) > 1:
        final = {key: median_result([r[key] for r in runs if key in r]) for key in runs[0]}
        print_table(final, f"median of {len(runs)} runs")
    print_goals(final)
    print(
        f"\ntotal {time.monotonic() - started:.0f}s; {os.cpu_count()} CPUs; peak RSS = VmHWM "
        "(Celery: main + pool children summed)"
    )
    if args.png and str(args.png).strip() not in ("", "."):
        plot(final, args.png, f"N={args.n}, {len(runs)} run(s), {os.cpu_count()} CPUs")
        print(f"plot: {args.png}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": [{k: vars(v) | {"rate": v.rate} for k, v in r.items()} for r in runs],
                    "goals": [{"name": g[0], "value": g[1], "goal": g[2], "met": g[3]} for g in goals(final)],
                },
                indent=2,
                default=str,
            )
        )
    return 0 if all(r.ok for run in runs for r in run.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
