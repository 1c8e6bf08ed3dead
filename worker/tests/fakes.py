"""Stand-ins for the worker's collaborators, shared by the test modules.

pika (Broker, FakeConnection, FakeChannel, RecordingChannel), the store and database
(FakeStore, FakeJobStore), psycopg (Connector, FakeConn), the job action (FakeAction)
and a clock (Clock); settings from a default Config (batch_settings, ssh_settings) and
the batch core as one result (process_batch).  Test modules import from here, never
from each other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import pika
import pika.exceptions
import psycopg

from account_worker.actions import Action
from account_worker.batch import BatchSettings, process_in_groups
from account_worker.config import Config, load_config
from account_worker.delivery import BatchResult, Delivery
from account_worker.errors import DatabaseUnavailable, RecordRejected
from account_worker.messages import Job
from account_worker.ssh_pool import SshSettings
from account_worker.store import RecordedRun, Run, Store

# ---------------------------------------------------------------------------- settings


def default_config(**environ: str) -> Config:
    """A Config from the required variables and `environ`: every other setting at its default."""
    return load_config({"WORKER_AMQP_URLS": "amqp://rabbit", "WORKER_DATABASE_URL": "postgresql://db/x", **environ})


def batch_settings(**changes: Any) -> BatchSettings:
    """The batch core's settings of a default Config, with `changes`."""
    return replace(BatchSettings.from_config(default_config()), **changes)


def ssh_settings(**changes: Any) -> SshSettings:
    """The ssh action's settings of a default Config (ssh action, key /k, known hosts /kh), with `changes`."""
    cfg = default_config(
        WORKER_ACTION="ssh", WORKER_SSH_KEY_FILE="/k", WORKER_SSH_KNOWN_HOSTS="/kh", WORKER_SSH_COMMANDS="/c"
    )
    return replace(SshSettings.from_config(cfg), **changes)


# ---------------------------------------------------------------------------- the batch core


def process_batch(
    deliveries: Sequence[Delivery],
    store: Store,
    action: Action,
    settings: BatchSettings,
    logger: logging.Logger | None = None,
    *,
    pool: Executor | None = None,
) -> BatchResult:
    """The batch core as one result: process_in_groups' results merged, one instruction per delivery, in order.

    The job thread posts each group's result as it comes (a crash then loses no decision made
    before it); tests look at the whole batch at once.
    """
    results = list(process_in_groups(deliveries, store, action, settings, logger, pool=pool))
    if len(results) == 1:
        return results[0]
    by_delivery = {id(i.delivery): i for result in results for i in result.instructions}
    return BatchResult(
        tuple(by_delivery[id(d)] for d in deliveries), database_down=any(r.database_down for r in results)
    )


# ---------------------------------------------------------------------------- clock


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- store, database, action


class FakeStore:
    """In-memory accounts + job_runs; a name in `down_on` makes that call fail like a dead database.

    Like PostgreSQL, a call that carries a value in `rejected` (an account_uuid or a message_id)
    fails as a whole with RecordRejected (or with `reject_with`, when set) and changes nothing.
    """

    def __init__(self, accounts: dict[str, str]) -> None:
        self.accounts = accounts
        self.runs: dict[str, RecordedRun] = {}
        self.down_on: set[str] = set()
        self.calls: list[str] = []
        self.commits = 0
        self.rejected: set[str] = set()
        self.reject_with: Exception | None = None

    def _refuse(self, values: Sequence[str]) -> None:
        bad = sorted(set(values) & self.rejected)
        if bad:
            raise self.reject_with or RecordRejected(f"value out of range: {bad[0]}")

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if name in self.down_on:
            raise DatabaseUnavailable("connection refused")

    def lookup_hosts(self, account_uuids: Sequence[str]) -> dict[str, str]:
        self._check("lookup_hosts")
        self._refuse(account_uuids)
        return {u: self.accounts[u] for u in account_uuids if u in self.accounts}

    def find_runs(self, message_ids: Sequence[str]) -> dict[str, RecordedRun]:
        self._check("find_runs")
        self._refuse(message_ids)
        return {m: self.runs[m]._replace(already_done=True) for m in message_ids if m in self.runs}

    def record_runs(self, runs: Sequence[Run]) -> list[RecordedRun]:
        self._check("record_runs")
        self._refuse([r.message_id for r in runs])
        out = []
        for run in runs:
            if run.message_id in self.runs:
                out.append(self.runs[run.message_id]._replace(already_done=True))
            else:
                self.runs[run.message_id] = RecordedRun(
                    run.message_id, run.host, run.status, False, run.exit_status, run.stdout, run.stderr
                )
                out.append(self.runs[run.message_id])
        self.commits += 1
        return out


class FakeJobStore(FakeStore):
    """A FakeStore that can be pinged and closed (store.JobStore); `ping_failures` pings fail first."""

    def __init__(self, accounts: dict[str, str]) -> None:
        super().__init__(accounts)
        self.ping_failures = 0
        self.closed = False

    def record_runs(self, runs: Sequence[Run]) -> list[RecordedRun]:
        if "record_runs" in self.down_on:
            self.down_on.add("ping")  # the database is down for everyone now
        return super().record_runs(runs)

    def ping(self) -> None:
        if "ping" in self.down_on:
            raise DatabaseUnavailable("still down")
        if self.ping_failures:
            self.ping_failures -= 1
            raise DatabaseUnavailable("down")

    def close(self) -> None:
        self.closed = True


class FakeAction:
    """Returns "done", or what `behaviour` says for the job's account (raising it if it is an exception)."""

    def __init__(self, behaviour: dict[str, BaseException | str] | None = None) -> None:
        self.behaviour = behaviour or {}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, job: Job, host: str) -> str:
        self.calls.append((job.message_id, host))
        outcome = self.behaviour.get(job.account_uuid, "done")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


# ---------------------------------------------------------------------------- psycopg


class FakeCursor:
    def __init__(self, rows):
        self._rows = rows

    def fetchall(self):
        return self._rows

    def fetchone(self):
        return self._rows[0] if self._rows else None


class FakeConn:
    """A psycopg connection answering every query with responder(sql, params)."""

    def __init__(self, responder):
        self.responder = responder
        self.closed = False
        self.log: list[str] = []

    def execute(self, sql, params=None):
        self.log.append(" ".join(sql.split()))
        return FakeCursor(self.responder(sql, params))

    def close(self):
        self.closed = True


class Connector:
    """psycopg.connect stand-in: the first `fail_times` calls are refused."""

    def __init__(self, responder, fail_times=0):
        self.responder = responder
        self.fail_times = fail_times
        self.conns: list[FakeConn] = []
        self.kwargs = None

    def __call__(self, url, **kwargs):
        self.kwargs = kwargs
        if self.fail_times:
            self.fail_times -= 1
            raise psycopg.OperationalError("connection refused password=dbpass")
        conn = FakeConn(self.responder)
        self.conns.append(conn)
        return conn


# ---------------------------------------------------------------------------- pika


class RecordingChannel:
    """Records every method call as (name, keyword arguments); basic_consume returns a consumer tag."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, {**kwargs, "args": args} if args else kwargs))
            return "ctag" if name == "basic_consume" else None

        return record


class RecordingConnection:
    """A connection whose channel is a RecordingChannel; callbacks from other threads run on pump."""

    def __init__(self) -> None:
        self.ch = RecordingChannel()
        self.is_open = True
        self.callbacks: list = []

    def channel(self):
        return self.ch

    def add_callback_threadsafe(self, callback):
        self.callbacks.append(callback)

    def process_data_events(self, time_limit=0):
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()

    def close(self):
        self.is_open = False


@dataclass
class Method:
    delivery_tag: int
    redelivered: bool = False


class FakeChannel:
    """One channel of the in-memory broker: tags count from 1 per channel, as on RabbitMQ."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.consumer = None
        self.next_tag = 0
        self.unacked: dict[int, tuple] = {}
        self.closed = False

    def confirm_delivery(self):
        pass

    def basic_qos(self, prefetch_count):
        self.broker.prefetch = prefetch_count

    def basic_consume(self, queue, on_message_callback, auto_ack):
        assert auto_ack is False
        self.consumer = on_message_callback
        self.broker.events.append("consume")
        return "ctag"

    def basic_cancel(self, tag):
        self.consumer = None
        self.broker.events.append("cancel")

    def _settle(self, tag: int, requeue: bool | None) -> None:
        assert threading.current_thread() is self.broker.io_thread, "pika used off the I/O thread"
        assert not self.closed, "frame sent on a closed channel"
        message = self.unacked.pop(tag)  # KeyError == unknown tag == 406 on a real broker
        if requeue:
            self.broker.redelivered.add(message[0].message_id)
            self.broker.queue.append(message)
            self.broker.events.append(("nack", message[0].message_id))
        else:
            self.broker.events.append(("ack", message[0].message_id))

    def basic_ack(self, delivery_tag, multiple=False):
        if not multiple:
            self._settle(delivery_tag, None)
            return
        assert delivery_tag in self.unacked  # an unknown tag is a 406 on a real broker
        for tag in sorted(t for t in self.unacked if t <= delivery_tag):
            self._settle(tag, None)

    def basic_nack(self, delivery_tag, requeue):
        self._settle(delivery_tag, requeue)

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        assert threading.current_thread() is self.broker.io_thread, "pika used off the I/O thread"
        self.broker.published.append((exchange, routing_key, body, properties))
        if exchange == "" and routing_key == "jobs":  # a message given back: a new one at the tail
            self.broker.queue.append((properties, body))
            self.broker.events.append(("given_back", properties.message_id))

    def deliver(self) -> None:
        while self.consumer and self.broker.queue and len(self.unacked) < self.broker.prefetch:
            props, body = self.broker.queue.pop(0)
            self.next_tag += 1
            self.unacked[self.next_tag] = (props, body)
            self.consumer(self, Method(self.next_tag, props.message_id in self.broker.redelivered), props, body)


class FakeConnection:
    """pika.BlockingConnection stand-in; `broker.drop_connection` makes the next pump lose it."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.is_open = True
        self.callbacks: list = []
        self.lock = threading.Lock()
        self.ch: FakeChannel | None = None
        self.pumps = 0  # process_data_events calls: pika sends heartbeats from there

    def channel(self):
        self.ch = FakeChannel(self.broker)
        return self.ch

    def add_callback_threadsafe(self, callback):
        if not self.is_open:
            raise pika.exceptions.ConnectionWrongStateError()
        with self.lock:
            self.callbacks.append(callback)

    def process_data_events(self, time_limit=0):
        self.pumps += 1
        self.broker.io_thread = threading.current_thread()
        if self.broker.drop_connection.is_set():
            self.broker.drop_connection.clear()
            self.close()
            raise pika.exceptions.StreamLostError("connection reset")
        with self.lock:
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()
        if self.ch:
            self.ch.deliver()
        time.sleep(0.005)

    def close(self):
        if self.is_open and self.ch:
            for message in self.ch.unacked.values():  # broker requeues unacked on close
                self.broker.redelivered.add(message[0].message_id)
                self.broker.queue.append(message)
            self.ch.unacked.clear()
            self.ch.closed = True
        self.is_open = False


class Broker:
    """An in-memory RabbitMQ: one queue, its connections, and a log of consume/cancel/ack/nack events."""

    def __init__(self) -> None:
        self.queue: list[tuple] = []
        self.redelivered: set[str] = set()  # message ids the broker delivered before
        self.published: list[tuple] = []
        self.events: list = []
        self.prefetch = 0
        self.connections: list[FakeConnection] = []
        self.drop_connection = threading.Event()
        self.io_thread: threading.Thread | None = None

    def publish(self, message_id, account="u1", apikey="key", body=None, *, front=False, headers=None):
        raw = body if body is not None else json.dumps({"apikey": apikey, "account_uuid": account}).encode()
        props = pika.BasicProperties(message_id=message_id, headers=headers)
        self.queue.insert(0 if front else len(self.queue), (props, raw))

    def connect(self, cfg, stop, **kwargs):
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    def settled(self, kind):
        return [e[1] for e in self.events if isinstance(e, tuple) and e[0] == kind]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


class QueueChannel:
    """A confirm-mode channel on an in-memory broker of named queues, for basic.get tools (the DLQ)."""

    def __init__(self, queues: dict[str, list[tuple]]) -> None:
        self.queues = queues  # name -> [(properties, body)]
        self.unacked: dict[int, tuple[str, tuple]] = {}
        self.next_tag = 0
        self.published: list[tuple] = []
        self.is_open = True
        self.refuse_publish = False

    def queue_declare(self, queue, passive=False):
        count = len(self.queues[queue])
        return type("Ok", (), {"method": type("M", (), {"message_count": count})()})()

    def basic_get(self, queue, auto_ack=False):
        if not self.queues[queue]:
            return None, None, None
        message = self.queues[queue].pop(0)
        self.next_tag += 1
        self.unacked[self.next_tag] = (queue, message)
        return Method(self.next_tag), message[0], message[1]

    def basic_ack(self, delivery_tag, multiple=False):
        self.unacked.pop(delivery_tag)

    def basic_nack(self, delivery_tag, multiple=False, requeue=True):
        tags = sorted(t for t in self.unacked if multiple and (delivery_tag == 0 or t <= delivery_tag))
        returned: dict[str, list[tuple]] = {}
        for tag in tags or [delivery_tag]:
            queue, message = self.unacked.pop(tag)
            returned.setdefault(queue, []).append(message)
        for queue, messages in returned.items():  # back at the head, in their order
            self.queues[queue][:0] = messages

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        if self.refuse_publish:
            raise pika.exceptions.NackError([])
        self.published.append((exchange, routing_key, body, properties))
        if exchange == "":
            self.queues.setdefault(routing_key, []).append((properties, body))


class GatedAction(FakeAction):
    """A FakeAction whose jobs for the accounts in `gates` wait for that account's Event (a slow host)."""

    def __init__(self, gates: dict[str, threading.Event], behaviour: dict[str, BaseException | str] | None = None):
        super().__init__(behaviour)
        self.gates = gates
        self.started: set[str] = set()

    def __call__(self, job: Job, host: str) -> str:
        self.started.add(job.message_id)
        gate = self.gates.get(job.account_uuid)
        if gate is not None:
            gate.wait(10)
        return super().__call__(job, host)
