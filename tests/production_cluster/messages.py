#!/usr/bin/env python3
"""Publish persistent messages to a quorum queue, or drain and count them (around a rolling restart).

    messages.py publish QUEUE N   declare QUEUE (quorum), publish N numbered messages with confirms
    messages.py drain QUEUE N     consume everything, check all N came back, delete QUEUE
Cluster location and credentials from the CLUSTER_* environment (see cluster.py).
"""

from __future__ import annotations

import sys

from cluster import Cluster, publish_confirmed, take_all


def publish(cluster: Cluster, queue: str, n: int) -> int:
    # Before the rolling restart every node is up: declare and publish through the first.
    conn = cluster.connect(cluster.nodes[0])
    conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    confirmed = publish_confirmed(cluster, cluster.nodes[0], queue, n, publishers=4)
    print(f"published {n} messages to {queue}, {len(confirmed)} confirmed")
    return 0 if len(confirmed) == n else 1


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
