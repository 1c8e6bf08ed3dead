"""Operators' dead-letter tools: `account-worker-dlq summary` and `account-worker-dlq replay`.

Configured like the worker (WORKER_AMQP_URLS, WORKER_QUEUE, ...: run it with the worker's
envdir, `chpst -e /etc/account-worker/env account-worker-dlq summary`).

AMQP 0.9.1 has no way to read a quorum queue without taking its messages, and giving one
back (nack/requeue, or closing the channel) raises its x-delivery-count: RabbitMQ 4.0
gives every quorum queue a delivery limit of 20 by default, and jobs.dlq has no
dead-letter exchange, so a DLQ read twenty times that way would silently drop its
messages.  The tools therefore never give a message back: each dead letter is taken with
basic.get (manual ack), and one that stays is republished to the tail of the DLQ as a
copy (same body and properties, x-death and the worker's reason included; only the
broker's x-delivery-count is left out) on a confirm-mode channel, and the original is
acked only once the broker has confirmed the copy.  A pass reads the messages present
when it starts, so the DLQ keeps its order.  If the tool dies between a confirm and its
ack, that one dead letter is there twice, never lost.

summary counts per reason, with the oldest and newest x-worker-failed-at.  replay moves
the selected dead letters (by reason substring, message id, message id prefix, or all)
to the work queue the same way (publish, confirm, then ack), without the worker's and the
broker's bookkeeping headers (x-attempt, x-delivery-count, x-death, x-worker-*), so each
starts again at attempt 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika

from account_worker import amqp
from account_worker.config import Config, load_config
from account_worker.errors import ConfigError
from account_worker.messages import ATTEMPT_HEADER, DELIVERY_COUNT_HEADER, delivery_count

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78
DROPPED_ON_REPLAY = (ATTEMPT_HEADER, DELIVERY_COUNT_HEADER, amqp.ORIGINAL_QUEUE_HEADER)
DROPPED_PREFIXES = ("x-worker-", "x-death", "x-first-death-", "x-last-death-")


@dataclass
class Summary:
    total: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    oldest: str | None = None  # x-worker-failed-at (ISO 8601, UTC): strings sort like the times
    newest: str | None = None
    max_delivery_count: int = 0  # the broker's count of returns: 0 unless something gave dead letters back

    def add(self, headers: Mapping[str, Any]) -> None:
        self.total += 1
        self.max_delivery_count = max(self.max_delivery_count, delivery_count(headers))
        self.reasons[_text(headers.get(amqp.REASON_HEADER)) or "(no reason: dead-lettered by the broker)"] += 1
        failed_at = _text(headers.get(amqp.FAILED_AT_HEADER))
        if failed_at:
            self.oldest = min(self.oldest or failed_at, failed_at)
            self.newest = max(self.newest or failed_at, failed_at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "oldest": self.oldest,
            "newest": self.newest,
            "max_delivery_count": self.max_delivery_count,
            "reasons": dict(self.reasons.most_common()),
        }


@dataclass(frozen=True)
class Selector:
    reason: str | None = None
    message_ids: frozenset[str] = frozenset()
    message_id_prefix: str | None = None
    everything: bool = False

    def __call__(self, message_id: str | None, headers: Mapping[str, Any]) -> bool:
        if self.everything:
            return True
        if message_id is not None and message_id in self.message_ids:
            return True
        if self.message_id_prefix and message_id and message_id.startswith(self.message_id_prefix):
            return True
        reason = self.reason
        return reason is not None and reason != "" and reason in _text(headers.get(amqp.REASON_HEADER))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _bookkeeping(headers: Mapping[str, Any]) -> tuple[str, ...]:
    """The headers a replayed copy leaves behind: the worker's and the broker's, not the publisher's."""
    return tuple(k for k in headers if k in DROPPED_ON_REPLAY or k.startswith(DROPPED_PREFIXES))


def walk(channel: Any, queue: str, visit: Callable[[Any, Any, bytes], bool]) -> int:
    """basic.get each message present at the start; visit() returns True if it settled it.

    One it did not settle is put back at the tail as a confirmed copy, then acked (see the
    module docstring).  If anything fails, the message in hand is given back (nack, requeue).
    Returns how many messages were seen.
    """
    present = channel.queue_declare(queue=queue, passive=True).method.message_count
    seen = 0
    in_hand = False
    try:
        while seen < present:
            method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                break
            seen += 1
            in_hand = True
            if not visit(method, properties, body):
                copy = amqp.copy_properties(properties, {}, drop=(DELIVERY_COUNT_HEADER,))
                channel.basic_publish(exchange="", routing_key=queue, body=body, properties=copy, mandatory=True)
                channel.basic_ack(delivery_tag=method.delivery_tag)
            in_hand = False
    finally:
        if in_hand and channel.is_open:
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
    return seen


def summarise(channel: Any, cfg: Config) -> Summary:
    summary = Summary()

    def visit(method: Any, properties: Any, body: bytes) -> bool:
        summary.add(properties.headers or {})
        return False

    walk(channel, cfg.dead_letter_queue, visit)
    return summary


def replay(channel: Any, cfg: Config, select: Selector, dry_run: bool = False) -> tuple[int, int]:
    """Move the selected dead letters back to cfg.queue; (moved, kept)."""
    moved = kept = 0

    def visit(method: Any, properties: Any, body: bytes) -> bool:
        nonlocal moved, kept
        headers = properties.headers or {}
        if not select(properties.message_id, headers):
            kept += 1
            return False
        moved += 1
        if dry_run:
            return False
        copy = amqp.copy_properties(
            properties,
            {},
            drop=_bookkeeping(headers),
            expiration=None,
            delivery_mode=pika.DeliveryMode.Persistent,
        )
        # Confirm mode: returns once the broker has the copy; raises if it was refused or unroutable.
        channel.basic_publish(exchange="", routing_key=cfg.queue, body=body, properties=copy, mandatory=True)
        channel.basic_ack(delivery_tag=method.delivery_tag)
        return True

    walk(channel, cfg.dead_letter_queue, visit)
    return moved, kept


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="account-worker-dlq",
        description="Summarise the worker's dead-letter queue, or move dead letters back to the work queue.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="counts per reason, oldest and newest; removes nothing")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    move = commands.add_parser("replay", help="move selected dead letters back to the work queue")
    move.add_argument("--reason", help="dead letters whose x-worker-reason contains this text")
    move.add_argument("--message-id", action="append", default=[], help="this message id (repeatable)")
    move.add_argument("--message-id-prefix", help="message ids starting with this")
    move.add_argument("--all", action="store_true", help="every dead letter")
    move.add_argument("--dry-run", action="store_true", help="count what would move, move nothing")
    move.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.command == "replay" and not (args.reason or args.message_id or args.message_id_prefix or args.all):
        parser.error("replay needs --reason, --message-id, --message-id-prefix or --all")
    return args


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        cfg = load_config(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"account-worker-dlq: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    conn = amqp.connect(cfg, stop, sleep=lambda _: stop.set())  # one round over the URLs, no retry loop
    if conn is None:
        print("account-worker-dlq: no broker reachable", file=sys.stderr)
        return EXIT_FAILED
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        if args.command == "summary":
            result = summarise(channel, cfg).as_dict()
            _print(result, args.json)
        else:
            select = Selector(args.reason, frozenset(args.message_id), args.message_id_prefix, args.all)
            moved, kept = replay(channel, cfg, select, args.dry_run)
            _print({"moved": moved, "kept": kept, "dry_run": args.dry_run, "to": cfg.queue}, args.json)
    except amqp.CONNECTION_ERRORS + amqp.PUBLISH_ERRORS as exc:
        print(f"account-worker-dlq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if conn.is_open:
            conn.close()
    return EXIT_OK


def _print(result: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for reason, count in value.items():
                print(f"  {count:>7}  {reason}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
