"""Publishing for bench/worker_throughput.py and bench/ssh_throughput.py: jobs published with publisher
confirms, and a blocking broker connection for declarations, counts and clean-up."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence

import pika
import pika.exceptions

from support.jobs import job_body, job_properties

ACCOUNTS = ("1234", "5678")  # seeded in the sandbox database
APIKEY = "bench"

Message = tuple[str, bytes, pika.BasicProperties]  # (message_id, body, properties)


def message_id(prefix: str, index: int) -> str:
    """The id of a run's index-th job (celery_app.py publish names its tasks the same way)."""
    return f"{prefix}{index:07d}"


def job_messages(
    prefix: str, count: int, accounts: Sequence[str] = ACCOUNTS, payload: Mapping[str, object] | None = None
) -> list[Message]:
    """`count` persistent jobs in the worker's format, ids prefix0000000.., accounts alternating;
    with `payload` (e.g. the ssh action's {"command": "true"}) each job carries it."""
    out = []
    for i in range(count):
        mid = message_id(prefix, i)
        account = accounts[i % len(accounts)]
        if payload is None:
            body = job_body(account, APIKEY)
        else:
            job = {"apikey": APIKEY, "account_uuid": account, "payload": payload}
            body = json.dumps(job, separators=(",", ":")).encode()
        out.append((mid, body, job_properties(mid)))
    return out


class Confirms:
    """Bookkeeping of publisher confirms: delivery tags 1..sent, each acked or nacked once.

    A confirm with `multiple` settles every pending tag up to and including its tag."""

    def __init__(self) -> None:
        self.sent = 0
        self.confirmed = 0
        self.nacked = 0
        self._pending: set[int] = set()
        self._low = 1  # no pending tag below this one

    def published(self) -> None:
        self.sent += 1
        self._pending.add(self.sent)

    @property
    def unconfirmed(self) -> int:
        return self.sent - self.confirmed

    def settle(self, tag: int, multiple: bool, nack: bool) -> int:
        """Record one confirm frame; the number of messages it settled."""
        if multiple:
            done = [t for t in range(self._low, tag + 1) if t in self._pending]
        else:
            done = [tag] if tag in self._pending else []
        self._pending.difference_update(done)
        while self._low <= self.sent and self._low not in self._pending:
            self._low += 1
        self.confirmed += len(done)
        if nack:
            self.nacked += len(done)
        return len(done)


def publish_confirmed(
    url: str,
    queue: str,
    messages: Sequence[Message],
    window: int = 1000,
    timeout: float = 120.0,
) -> None:
    """Publish to `queue` on the default exchange with up to `window` unconfirmed; all must be acked."""
    total = len(messages)
    confirms = Confirms()
    errors: list[str] = []
    holder: dict[str, object] = {}

    def pump() -> None:
        channel = holder["channel"]
        while confirms.sent < total and confirms.unconfirmed < window:
            _, body, props = messages[confirms.sent]
            channel.basic_publish("", queue, body, props)  # type: ignore[attr-defined]
            confirms.published()

    def on_confirm(frame: pika.frame.Method) -> None:
        method = frame.method
        confirms.settle(method.delivery_tag, method.multiple, isinstance(method, pika.spec.Basic.Nack))
        if confirms.confirmed >= total:
            holder["conn"].close()  # type: ignore[attr-defined]
        else:
            pump()

    def on_channel(channel: object) -> None:
        holder["channel"] = channel
        channel.add_on_close_callback(lambda ch, reason: fail(f"channel closed: {reason}"))  # type: ignore[attr-defined]
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _frame: pump())  # type: ignore[attr-defined]

    def fail(message: str) -> None:
        if confirms.confirmed < total:
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
    if errors or confirms.nacked or confirms.confirmed < total:
        state = {"sent": confirms.sent, "confirmed": confirms.confirmed, "nacked": confirms.nacked}
        raise RuntimeError(f"publish to {queue} failed: {errors or state}")


class Broker:
    """A blocking connection for declarations, counts and clean-up."""

    def __init__(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = 0  # idle for minutes between calls; loopback only
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        """The open channel (a new one after the broker closed the last, e.g. on a failed passive declare)."""
        if not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def declare_quorum(self, queue: str) -> None:
        self.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})

    def ready(self, queue: str) -> int:
        return self.channel().queue_declare(queue, passive=True).method.message_count

    def queue_exists(self, queue: str) -> bool:
        try:
            self.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def exchange_exists(self, exchange: str) -> bool:
        try:
            self.channel().exchange_declare(exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def delete_queue(self, queue: str) -> None:
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            self.channel().queue_delete(queue)

    def delete_exchange(self, exchange: str) -> None:
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            self.channel().exchange_delete(exchange)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
