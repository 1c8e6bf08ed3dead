"""Everything that talks AMQP: connecting, topology, and the republishing helpers.

Only the I/O thread may call these (pika is not thread-safe).
"""

from __future__ import annotations

import json
import logging
import os
import random as _random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from account_worker.backoff import backoff_delay
from account_worker.config import Config
from account_worker.delivery import Delivery
from account_worker.logsetup import LOGGER_NAME, log_event
from account_worker.messages import ATTEMPT_HEADER, DELIVERY_COUNT_HEADER, message_id_of
from account_worker.redact import redact_url

# Errors after which the connection (and every delivery tag on it) is gone.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
# Errors of one connection attempt.  pika's BlockingConnection passes some of its connection
# workflow's own errors through unwrapped (AMQPConnectorStackTimeout: the TCP, TLS and AMQP
# handshakes together took longer than the stack timeout, as with a node busy noticing that a
# peer is gone); they are not AMQPErrors, and a worker that took them for a bug would exit.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, AMQPConnectorException)
# A publish the broker refused or could not route; the connection is still fine.
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.UnroutableError, pika.exceptions.NackError)

REASON_HEADER = "x-worker-reason"
FAILED_AT_HEADER = "x-worker-failed-at"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
DROPPED_HEADERS_HEADER = "x-worker-dropped-headers"
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def connection_name() -> str:
    return f"account-worker@{socket.gethostname()}:{os.getpid()}"


def connection_parameters(url: str, cfg: Config) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = cfg.heartbeat
    params.blocked_connection_timeout = max(60.0, 2.0 * cfg.heartbeat)
    params.connection_attempts = 1
    params.socket_timeout = 10.0
    params.client_properties = {"connection_name": connection_name(), "product": "account-worker"}
    if params.ssl_options is not None:  # amqps://: always our verifying context, never pika's
        params.ssl_options = pika.SSLOptions(tls_context(cfg), server_hostname=params.host)
    return params


def tls_context(cfg: Config) -> ssl.SSLContext:
    """The client context of amqps:// connections: the broker's certificate chain and host name are
    verified against WORKER_AMQP_CA_FILE (the system's trust store when unset), TLS 1.2 at least, and
    the client certificate presented when one is configured.  Built for each connection attempt, so a
    rotated CA file is read on the next reconnect."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.amqp_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cfg.amqp_client_cert is not None:
        context.load_cert_chain(cfg.amqp_client_cert, cfg.amqp_client_key)
    return context


def connect(
    cfg: Config,
    stop: threading.Event,
    *,
    factory: Callable[[pika.URLParameters], Any] = pika.BlockingConnection,
    sleep: Callable[[float], Any] | None = None,
    random: Callable[[], float] = _random.random,
    logger: logging.Logger | None = None,
) -> Any | None:
    """Try each URL in turn, backing off (capped, full jitter) after every failed round.

    Returns an open connection, or None once `stop` is set.
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    wait = sleep or stop.wait
    rounds = 0
    while not stop.is_set():
        for url in cfg.amqp_urls:
            if stop.is_set():
                return None
            try:
                conn = factory(connection_parameters(url, cfg))
            except ssl.SSLCertVerificationError as exc:
                # The broker's certificate is not trusted (another CA, wrong name, expired): say so
                # plainly, it will not fix itself; the retry loop goes on (the CA may be rotated).
                log_event(
                    log,
                    logging.ERROR,
                    "amqp_tls_refused",
                    url=redact_url(url),
                    broker=_broker(url),
                    error=f"certificate verify failed: {exc.verify_message}",
                )
                continue
            except CONNECT_ERRORS as exc:
                log_event(log, logging.WARNING, "amqp_connect_failed", url=redact_url(url), error=_describe(exc))
                continue
            log_event(log, logging.INFO, "amqp_connected", url=redact_url(url))
            return conn
        delay = backoff_delay(rounds, base=BACKOFF_BASE, cap=BACKOFF_CAP, random=random)
        rounds += 1
        log_event(log, logging.WARNING, "amqp_unavailable", retry_in=f"{delay:.2f}s", round=rounds)
        wait(delay)
    return None


def _broker(url: str) -> str:
    params = pika.URLParameters(url)
    return f"{params.host}:{params.port}"


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def queue_arguments(cfg: Config) -> dict[str, dict[str, Any]]:
    """x-arguments of the three queues, by queue name (also what the Ansible role must declare)."""
    return {
        cfg.queue: {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": cfg.dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            # Broker-side redelivery cap: only requeues count (crashes, database outages - at most
            # one per outage per in-flight message); retries are new messages.
            "x-delivery-limit": cfg.delivery_limit,
        },
        cfg.retry_queue: {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": cfg.queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
        cfg.dead_letter_queue: {"x-queue-type": "quorum"},
    }


def declare_topology(channel: Any, cfg: Config) -> None:
    """Declare DLX (fanout) + DLQ, the main queue and the retry queue. Idempotent."""
    arguments = queue_arguments(cfg)
    channel.exchange_declare(exchange=cfg.dead_letter_exchange, exchange_type="fanout", durable=True)
    for name in (cfg.dead_letter_queue, cfg.queue, cfg.retry_queue):
        channel.queue_declare(queue=name, durable=True, arguments=arguments[name])
    channel.queue_bind(queue=cfg.dead_letter_queue, exchange=cfg.dead_letter_exchange, routing_key="")


def delivery_from_pika(method: Any, properties: Any, body: bytes, source: object) -> Delivery:
    """A Delivery received by `source` (the session of the channel it arrived on)."""
    headers = getattr(properties, "headers", None)
    return Delivery(
        tag=method.delivery_tag,
        source=source,
        body=body,
        message_id=message_id_of(getattr(properties, "message_id", None), headers),
        headers=dict(headers) if headers else None,
        reply_to=getattr(properties, "reply_to", None),
        correlation_id=getattr(properties, "correlation_id", None),
        properties=properties,
        redelivered=bool(getattr(method, "redelivered", False)),
        received_at=time.monotonic(),
    )


def copy_properties(
    properties: Any, headers: Mapping[str, Any], *, drop: tuple[str, ...] = (), **changes: Any
) -> pika.BasicProperties:
    """A new BasicProperties with every field of `properties`, extra headers, headers in `drop` removed, `changes`."""
    fields = (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    )
    values = {name: getattr(properties, name, None) for name in fields}
    kept = {k: v for k, v in (getattr(properties, "headers", None) or {}).items() if k not in drop}
    values["headers"] = {**kept, **headers}
    values.update(changes)
    return _encodable(pika.BasicProperties(**values))


def _encodes(properties: pika.BasicProperties) -> bool:
    try:
        properties.encode()
    except Exception:  # noqa: BLE001 - pika raises several types for a value it cannot encode
        return False
    return True


def _encodable(properties: pika.BasicProperties) -> pika.BasicProperties:
    """The properties, or, if pika cannot encode them back (a float header: pika decodes but never
    encodes one), a copy without the offending headers, named in x-worker-dropped-headers."""
    if _encodes(properties):
        return properties
    headers = properties.headers or {}
    dropped = sorted(k for k, v in headers.items() if not _encodes(pika.BasicProperties(headers={k: v})))
    properties.headers = {k: v for k, v in headers.items() if k not in dropped}
    properties.headers[DROPPED_HEADERS_HEADER] = ",".join(ascii(k)[1:-1][:64] for k in dropped)[:1000]
    if not _encodes(properties):  # not a header after all: keep only what the worker itself adds
        properties = pika.BasicProperties(
            headers={k: v for k, v in properties.headers.items() if k.startswith("x-worker-") or k == ATTEMPT_HEADER},
            delivery_mode=properties.delivery_mode,
            expiration=properties.expiration,
        )
    return properties


def publish_reply(channel: Any, delivery: Delivery, reply: Mapping[str, str | int]) -> None:
    channel.basic_publish(
        exchange="",
        routing_key=delivery.reply_to,
        body=json.dumps(dict(reply), separators=(",", ":")).encode("utf-8"),
        properties=pika.BasicProperties(
            content_type="application/json",
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
        ),
    )


def publish_retry(channel: Any, cfg: Config, delivery: Delivery, next_attempt: int, delay_ms: int) -> None:
    """Park a copy in the retry queue; it dead-letters back into the main queue after delay_ms.

    The copy is a new message: the broker's count of returns of this one does not go with it.
    """
    properties = copy_properties(
        delivery.properties,
        {ATTEMPT_HEADER: next_attempt},
        drop=(DELIVERY_COUNT_HEADER,),
        expiration=str(delay_ms),
        delivery_mode=pika.DeliveryMode.Persistent,
    )
    channel.basic_publish(
        exchange="", routing_key=cfg.retry_queue, body=delivery.body, properties=properties, mandatory=True
    )


def publish_again(channel: Any, cfg: Config, delivery: Delivery) -> None:
    """Put a copy of the delivery back at the tail of the work queue (a new message: no x-delivery-count)."""
    properties = copy_properties(delivery.properties, {}, drop=(DELIVERY_COUNT_HEADER,))
    channel.basic_publish(exchange="", routing_key=cfg.queue, body=delivery.body, properties=properties, mandatory=True)


def publish_dead_letter(
    channel: Any, cfg: Config, delivery: Delivery, reason: str, now: datetime | None = None
) -> None:
    """Publish a copy carrying the reason to the DLX (basic_reject cannot carry one).

    The broker's x-delivery-count of the original stays behind: the copy is a new message.
    """
    failed_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    properties = copy_properties(
        delivery.properties,
        {REASON_HEADER: reason, FAILED_AT_HEADER: failed_at, ORIGINAL_QUEUE_HEADER: cfg.queue},
        drop=(DELIVERY_COUNT_HEADER,),
        expiration=None,
        delivery_mode=pika.DeliveryMode.Persistent,
    )
    channel.basic_publish(
        exchange=cfg.dead_letter_exchange,
        routing_key=cfg.queue,
        body=delivery.body,
        properties=properties,
        mandatory=True,
    )
