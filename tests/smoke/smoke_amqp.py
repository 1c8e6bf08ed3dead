"""AMQP helpers: connecting with bounded waits, readable failures, waiting on
deliveries with a deadline, and cleaning up what a test declared."""

from __future__ import annotations

import logging
import math
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from smoke_errors import SmokeError, tls_reason
from smoke_settings import Target


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the broker closed the connection")
        data += chunk
    return data


def _read_method(sock: socket.socket) -> tuple[int, int, bytes]:
    """One method frame: (class id, method id, arguments)."""
    kind, _channel, size = struct.unpack("!BHI", _read_exact(sock, 7))
    payload = _read_exact(sock, size + 1)[:-1]
    if kind != 1:
        raise EOFError(f"expected a method frame, got frame type {kind}")
    class_id, method_id = struct.unpack("!HH", payload[:4])
    return class_id, method_id, payload[4:]


def sasl_login(target: Target, mechanism: str, response: bytes) -> tuple[list[str], str]:
    """Start an AMQP 0-9-1 connection by hand (pika offers only PLAIN and EXTERNAL) and log in with any SASL
    mechanism: the mechanisms the server offers, and what it answered: "tune" (logged in),
    "close CODE TEXT" (refused) or "eof" (the socket closed)."""
    raw = socket.create_connection((target.amqp_host, target.amqp_port), timeout=target.timeout)
    sock = target.ssl_context().wrap_socket(raw, server_hostname=target.amqp_host) if target.tls else raw
    with sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        class_id, method_id, args = _read_method(sock)
        assert (class_id, method_id) == (10, 10), f"expected connection.start, got {class_id}.{method_id}"
        table_size = struct.unpack("!I", args[2:6])[0]
        rest = args[6 + table_size :]
        mechanisms = rest[4 : 4 + struct.unpack("!I", rest[:4])[0]].decode().split()
        name, locale = mechanism.encode(), b"en_US"
        start_ok = (
            struct.pack("!HHI", 10, 11, 0)
            + struct.pack("!B", len(name)) + name
            + struct.pack("!I", len(response)) + response
            + struct.pack("!B", len(locale)) + locale
        )  # fmt: skip
        sock.sendall(struct.pack("!BHI", 1, 0, len(start_ok)) + start_ok + b"\xce")
        try:
            class_id, method_id, args = _read_method(sock)
        except (EOFError, OSError):
            return mechanisms, "eof"
        if (class_id, method_id) == (10, 30):
            return mechanisms, "tune"
        if (class_id, method_id) == (10, 50):
            code, size = struct.unpack("!HB", args[:3])
            return mechanisms, f"close {code} {args[3 : 3 + size].decode(errors='replace')}"
        return mechanisms, f"method {class_id}.{method_id}"


def parameters(target: Target, connection_name: str) -> pika.URLParameters:
    """Connection parameters with every wait bounded by the target's timeout."""
    params = pika.URLParameters(target.amqp_url)
    params.socket_timeout = target.timeout
    params.stack_timeout = target.timeout
    params.blocked_connection_timeout = target.timeout
    params.connection_attempts = 1
    # A dead peer is noticed within about two heartbeats instead of the broker's 60 s.
    params.heartbeat = max(2, math.ceil(target.timeout))
    params.client_properties = {"connection_name": connection_name}
    if target.tls:
        params.ssl_options = pika.SSLOptions(target.ssl_context(), server_hostname=target.amqp_host)
    return params


def describe_connect_error(target: Target, exc: BaseException) -> str:
    url = target.redacted_url()
    if isinstance(exc, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        return f"the broker refused the credentials of {url} (user {target.user!r})"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return f"user {target.user!r} may not open vhost {target.vhost!r} at {url} ({_first_arg(exc)})"
    if isinstance(exc, pika.exceptions.IncompatibleProtocolError):
        return f"cannot connect to {url}: the port does not speak AMQP 0-9-1 (wrong port, or TLS mismatch?)"
    if isinstance(exc, pika.exceptions.AMQPConnectionError):
        return f"cannot connect to {url}: {_first_arg(exc)}"
    if isinstance(exc, ssl.SSLError):
        return f"cannot connect to {url}: {tls_reason(str(exc))}"
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to {url}: cannot resolve host {target.amqp_host!r} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {url}: {exc.strerror.lower()}"
    return f"cannot connect to {url}: {exc.__class__.__name__}: {exc}"


def _first_arg(exc: BaseException) -> str:
    """pika wraps the cause (in args[0], then in an `exception` attribute): show the cause."""
    cause: object = exc.args[0] if exc.args else exc
    while isinstance(cause, BaseException) and isinstance(getattr(cause, "exception", None), BaseException):
        cause = cause.exception  # type: ignore[attr-defined]
    if isinstance(cause, ssl.SSLError):
        return tls_reason(str(cause))
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(cause, TimeoutError):
        return "timed out"
    return repr(cause) if isinstance(cause, BaseException) else str(cause) or exc.__class__.__name__


@contextmanager
def _pika_quiet() -> Iterator[None]:
    """pika logs a failed connection attempt with a traceback; the SmokeError says it better."""
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def connect(target: Target, connection_name: str) -> pika.BlockingConnection:
    try:
        with _pika_quiet():
            return pika.BlockingConnection(parameters(target, connection_name))
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise SmokeError(describe_connect_error(target, exc)) from None


def describe_amqp_error(exc: pika.exceptions.AMQPError) -> str:
    """One line for an error that ends a test midway (closed channel, lost connection)."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return f"the broker closed the channel: ({exc.reply_code}) {exc.reply_text}"
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return f"the broker closed the connection: ({exc.reply_code}) {exc.reply_text}"
    return f"the AMQP connection failed: {exc!r}"


@dataclass
class Connections:
    """Opens named connections for one test and closes them all at its end."""

    target: Target
    name: str
    opened: list[pika.BlockingConnection] = field(default_factory=list)

    def open(self, label: str = "") -> pika.BlockingConnection:
        conn = connect(self.target, f"{self.name} {label}".rstrip())
        self.opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.opened:
            close_quietly(conn)
        self.opened.clear()


def server_properties(connection: pika.BlockingConnection) -> dict[str, Any]:
    # pika exposes what connection.start announced only on the implementation object.
    props = connection._impl.server_properties
    return {text(k): v for k, v in props.items()}


def close_quietly(connection: pika.BlockingConnection) -> None:
    if connection.is_open:
        with suppress(pika.exceptions.AMQPError):
            connection.close()


def wait_until(
    condition: Callable[[], bool],
    connections: Sequence[pika.BlockingConnection],
    timeout: float,
    step: float = 0.05,
) -> bool:
    """Pump the connections' I/O (running consumer callbacks) until `condition()`
    holds or `timeout` seconds pass; True when it held. No sleeping: pika returns
    as soon as there is something to dispatch."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for conn in connections:
            conn.process_data_events(time_limit=min(step, remaining))
    return True


@dataclass
class Delivery:
    body: bytes
    properties: pika.BasicProperties
    routing_key: str
    redelivered: bool


@dataclass
class Inbox:
    """Collects deliveries of one consumer."""

    deliveries: list[Delivery] = field(default_factory=list)

    def on_message(self, ch: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self.deliveries.append(Delivery(body, properties, method.routing_key, method.redelivered))
        ch.basic_ack(method.delivery_tag)


def consume(channel: BlockingChannel, queue: str, count: int, timeout: float) -> list[Delivery]:
    """Consume (with acks) until `count` messages arrived or `timeout` passed; what arrived."""
    inbox = Inbox()
    tag = channel.basic_consume(queue, inbox.on_message)
    try:
        wait_until(lambda: len(inbox.deliveries) >= count, [channel.connection], timeout)
    finally:
        channel.basic_cancel(tag)
    return inbox.deliveries


def drain(channel: BlockingChannel, queue: str, limit: int = 1000) -> list[bytes]:
    """Every message ready in `queue` (basic.get until empty), acked.

    Exact after a confirmed publish: a broker confirms a routed message only once
    every queue it was routed to has it."""
    bodies: list[bytes] = []
    for _ in range(limit):
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        bodies.append(body)
    return bodies


@dataclass
class Cleanup:
    """Non-exclusive queues and exchanges a test declared, deleted at teardown
    over a fresh connection (the test's own channel may be closed by then)."""

    open_connection: Callable[[], pika.BlockingConnection]
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def run(self) -> list[str]:
        """Delete everything; the names that could not be deleted."""
        if not (self.queues or self.exchanges):
            return []
        failed: list[str] = []
        conn = self.open_connection()
        try:
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for item in names:
                    if not _delete(conn, kind, item):
                        failed.append(f"{kind} {item}")
        finally:
            close_quietly(conn)
        return failed


def _delete(conn: pika.BlockingConnection, kind: str, item: str) -> bool:
    ch = conn.channel()
    try:
        if kind == "queue":
            ch.queue_delete(item)
        else:
            ch.exchange_delete(item)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code == 404  # already gone
    finally:
        if ch.is_open:
            ch.close()
    return True
