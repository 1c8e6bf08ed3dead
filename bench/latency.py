#!/usr/bin/env python3
"""One job's round trip, as a client waiting for it sees it: publish a job with `reply_to`, time until
the worker's reply arrives, one job at a time (the next is published once the reply is in).

Against any deployment whose workers answer `reply_to` (the sandbox after `make site`, the Molecule
production scenario, production): the AMQP URL, the CA when it is amqps://, the workers' apikey and an
account whose host they reach.  With the ssh action, `--payload '{"command": "uptime"}'` runs an
allow-listed command there; without a payload the action is what the workers run by default.

    .venv/bin/python bench/latency.py --url amqps://app:...@127.0.0.1:5671/app --ca-file ca.crt \\
        --apikey ... --account 1234 [--count 300] [--payload '{"command": "uptime"}'] [--label ssh]

Prints one row: jobs, p50, p90, p99, max and mean in milliseconds (the first --warmup jobs, which
open connections and caches, are left out).  The jobs are real: the workers record them like any other.

`--echo quorum` (or `classic`) measures the broker's share instead: the same loop against a consumer in
this process that only publishes the reply and acks, on a temporary queue of that type (deleted after);
no worker, no database.  The user needs configure permission on a `bench-echo-*` queue.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(fraction * len(ordered))) - 1)]


def connect(url: str, ca_file: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": "bundle-bench-latency"}
    if ca_file:
        params.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=ca_file), params.host)
    return pika.BlockingConnection(params)


@contextmanager
def echo_consumer(args: argparse.Namespace, queue_type: str) -> Iterator[str]:
    """A consumer that answers each message's reply_to at once, on a temporary queue; yields its name."""
    queue = f"bench-echo-{uuid.uuid4().hex[:8]}"
    conn = connect(args.url, args.ca_file)
    channel = conn.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    channel.basic_qos(prefetch_count=10)
    stop = threading.Event()

    def on_message(ch: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        reply = pika.BasicProperties(correlation_id=properties.correlation_id)
        ch.basic_publish("", properties.reply_to, body, reply)
        ch.basic_ack(method.delivery_tag)

    def serve() -> None:
        while not stop.is_set():
            conn.process_data_events(time_limit=0.1)

    channel.basic_consume(queue, on_message)
    thread = threading.Thread(target=serve, name="echo")
    thread.start()
    try:
        yield queue
    finally:
        stop.set()
        thread.join()
        channel.queue_delete(queue)
        conn.close()


def time_jobs(
    conn: pika.BlockingConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    count: int,
    *,
    timeout: float,
    id_prefix: str = "bench-latency-",
) -> list[tuple[str, float, float]]:
    """Publish `count` jobs one at a time with reply_to (the next once the reply is in) on `conn`;
    (message id, published, reply received) each, times from time.perf_counter()."""
    channel = conn.channel()
    reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    replies: dict[str, float] = {}

    def on_reply(ch: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        replies[properties.correlation_id or ""] = time.perf_counter()

    channel.basic_consume(reply_queue, on_reply, auto_ack=True)
    timed: list[tuple[str, float, float]] = []
    for i in range(count):
        correlation_id = str(uuid.uuid4())
        message_id = f"{id_prefix}{correlation_id}"
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_queue,
        )
        sent = time.perf_counter()
        channel.basic_publish(exchange, routing_key, body, props)
        deadline = sent + timeout
        while correlation_id not in replies:
            if time.perf_counter() > deadline:
                raise SystemExit(f"no reply to job {i} within {timeout:g} s (workers running? account?)")
            conn.process_data_events(time_limit=0.001)
        timed.append((message_id, sent, replies.pop(correlation_id)))
    return timed


def latencies(timed: list[tuple[str, float, float]], warmup: int) -> list[float]:
    """time_jobs' round trips in milliseconds, the first `warmup` left out."""
    return [(received - sent) * 1000 for _, sent, received in timed[warmup:]]


def measure(args: argparse.Namespace) -> list[float]:
    body: dict[str, Any] = {"apikey": args.apikey, "account_uuid": args.account}
    if args.payload:
        body["payload"] = json.loads(args.payload)
    conn = connect(args.url, args.ca_file)
    try:
        timed = time_jobs(
            conn,
            args.exchange,
            args.routing_key,
            json.dumps(body).encode(),
            args.warmup + args.count,
            timeout=args.timeout,
        )
    finally:
        conn.close()
    return latencies(timed, args.warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_AMQP_URL", ""), help="AMQP URL (BENCH_AMQP_URL)")
    parser.add_argument("--ca-file", default=os.environ.get("BENCH_CA_FILE", ""))
    parser.add_argument("--apikey", default=os.environ.get("BENCH_APIKEY", ""), help="the workers' WORKER_APIKEY")
    parser.add_argument("--account", default="", help="an account uuid whose host the workers reach (not with --echo)")
    parser.add_argument("--payload", default="", help="the job's payload, JSON (the ssh action's command)")
    parser.add_argument("--exchange", default="jobs")
    parser.add_argument("--routing-key", default="jobs")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one reply")
    parser.add_argument("--label", default="", help="the row's name (default: the payload's command or 'job')")
    parser.add_argument("--echo", choices=("quorum", "classic"), help="the broker alone: an echo consumer's queue")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url (or BENCH_AMQP_URL) is required")
    if not args.account and not args.echo:
        parser.error("--account is required (an account whose host the workers reach)")
    if args.echo:
        with echo_consumer(args, args.echo) as queue:
            args.exchange, args.routing_key = "", queue
            times = measure(args)
        label = args.label or f"echo, {args.echo} queue"
    else:
        times = measure(args)
        label = args.label or (json.loads(args.payload).get("command", "job") if args.payload else "job")
    print("| jobs | p50 ms | p90 ms | p99 ms | max ms | mean ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| {label} x {len(times)} | {percentile(times, 0.5):.1f} | {percentile(times, 0.9):.1f} "
        f"| {percentile(times, 0.99):.1f} | {max(times):.1f} | {statistics.fmean(times):.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
