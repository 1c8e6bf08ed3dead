#!/usr/bin/env python3
"""Publish persistent messages to a quorum queue, or drain and count them (around a rolling restart).

    messages.py publish QUEUE N   declare QUEUE (quorum), publish N numbered messages with confirms
    messages.py drain QUEUE N     consume everything, check all N came back, delete QUEUE
Cluster location and credentials from the CLUSTER_* environment (see cluster.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the support package cluster.py uses
from cluster import Cluster, take_all


def publish(cluster: Cluster, queue: str, n: int) -> int:
    conn = cluster.connect_any()
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()
    print(f"published and confirmed {n} messages to {queue}")
    return 0


def drain(cluster: Cluster, queue: str, n: int) -> int:
    conn = cluster.connect_any()
    ch = conn.channel()
    seen = take_all(ch, queue)
    ch.queue_delete(queue)
    conn.close()
    lost = n - len(seen & set(range(n)))
    print(f"{queue}: published {n}, received {len(seen)}, lost {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    action, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.exit({"publish": publish, "drain": drain}[action](Cluster.from_env(), queue, count))
