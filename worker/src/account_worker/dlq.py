"""Operators' dead-letter tools: `account-worker-dlq summary` and `account-worker-dlq replay`.

Configured like the worker (WORKER_AMQP_URLS, WORKER_QUEUE, ...: run it with the worker's
envdir, `chpst -e /etc/account-worker/env account-worker-dlq summary`).

summary reads every dead letter with basic.get (manual ack) and, once it has seen them all,
gives them back with one basic.nack(multiple, requeue): nothing is removed and the order is
kept.  The broker counts that as a return (a quorum queue raises x-delivery-count), which
matters only if the DLQ had a delivery limit: it has none in this bundle's topology.

replay moves the selected dead letters (by reason substring, message id, message id prefix,
or all) back to the work queue: each one is republished to the default exchange with
routing key WORKER_QUEUE, mandatory, on a confirm-mode channel, and acked in the DLQ only
once the broker has confirmed the copy; the copy leaves the worker's and the broker's
bookkeeping headers behind (x-attempt, x-delivery-count, x-death, x-worker-*), so it starts
again at attempt 1.  The others are given back as summary does.
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
from account_worker.messages import ATTEMPT_HEADER, DELIVERY_COUNT_HEADER

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

    def add(self, headers: Mapping[str, Any]) -> None:
        self.total += 1
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

    Unsettled ones are given back at the end with one nack(multiple, requeue).  Returns how many
    messages were seen.
    """
    present = channel.queue_declare(queue=queue, passive=True).method.message_count
    seen = unsettled = 0
    try:
        while seen < present:
            method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                break
            seen += 1
            unsettled += 1  # until visit() says it settled it (it may raise first)
            if visit(method, properties, body):
                unsettled -= 1
    finally:
        if unsettled and channel.is_open:
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
