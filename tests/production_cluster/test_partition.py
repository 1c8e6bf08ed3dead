"""A network partition (after test_cluster.py): one node cut off from the other two while a confirmed publisher
and the workers run, held apart longer than the Erlang net tick time, then reconnected. With
`cluster_partition_handling = pause_minority` (the role's choice for 3+ Mnesia nodes) the cut-off node pauses and
comes back by itself; no confirmed job is lost or recorded twice, no partition is left,
and no worker instance exits (each reconnects inside its process)."""

from __future__ import annotations

import subprocess
import time
import uuid

from cluster import (
    WORKER,
    Cluster,
    Publisher,
    assert_no_worker_restarted,
    cluster_status,
    wait_running_nodes,
    worker_hosts,
    worker_node,
    worker_processes,
)
from support.containers import podman, run_in
from support.db import recorded_ids, wait_recorded

# rabbit_node_monitor's words when pause_minority pauses a node, and when it starts again.
PAUSED = "minority"


def _address(node: str) -> tuple[str, str]:
    """The node's one podman network and its address there."""
    out = podman(
        "inspect", node, "--format", "{{range $n, $s := .NetworkSettings.Networks}}{{$n}} {{$s.IPAddress}}{{end}}"
    ).stdout.split()
    assert len(out) == 2, f"{node} is not on exactly one network: {out}"
    return out[0], out[1]


def _sees_down(node: str, other: str) -> bool:
    """Whether `node` no longer counts `other` among its running nodes (False while it cannot tell)."""
    try:
        return f"rabbit@{other}" not in cluster_status(node)["running_nodes"]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, KeyError):
        return False


def _log_lines(node: str) -> list[str]:
    return run_in(node, "sh", "-c", "cat /var/log/rabbitmq/rabbit@*.log").stdout.splitlines()


def _partitions(nodes: list[str], deadline_s: float = 60) -> dict[str, object]:
    """Each node's own list of partitions, once its CLI answers: the node that paused lists itself running to
    the others a little before its own CLI answers again (seen once: exit 64 seconds after it rejoined)."""
    deadline = time.monotonic() + deadline_s
    seen: dict[str, object] = {}
    errors: dict[str, str] = {}
    while True:
        for node in nodes:
            if node in seen:
                continue
            try:
                seen[node] = cluster_status(node).get("partitions")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as exc:
                errors[node] = f"{exc} {getattr(exc, 'stderr', '') or ''}".strip()
        if len(seen) == len(nodes) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(seen) == len(nodes), f"nodes whose CLI did not answer within {deadline_s} s: {errors}"
    return seen


def where_missing_jobs_are(cluster: Cluster, node: str, database_url: str, prefix: str, confirmed: list[str]) -> str:
    """When confirmed jobs are not recorded: which ids, what the vhost's queues hold, and what the worker
    instances logged about the first few ids (read before the scenario's hosts are thrown away)."""
    missing = sorted(set(confirmed) - recorded_ids(database_url, prefix))
    queues = run_in(node, "rabbitmqctl", "-q", "list_queues", "-p", cluster.vhost, "name", "messages",
                    "messages_unacknowledged", check=False).stdout  # fmt: skip
    logged = []
    events = "worker_starting|worker_stopped|crashed|amqp_connection_lost|amqp_connected|buffered_deliveries_dropped"
    for host in worker_hosts():
        for message_id in missing[:3]:
            out = run_in(host, "sh", "-c", f"grep -h -- '{message_id}' /var/log/{WORKER}-*/current | tail -5",
                         check=False).stdout  # fmt: skip
            logged += [f"{host}: {line}" for line in out.splitlines()]
        # What the instances went through (restarts, crashes, reconnections), for the cause.
        out = run_in(host, "sh", "-c", f"grep -E -H '{events}' /var/log/{WORKER}-*/current | tail -40",
                     check=False).stdout  # fmt: skip
        logged += [f"{host}: {line}" for line in out.splitlines()]
    return f"missing {len(missing)}: {missing[:10]}; queues: {queues.split()}; worker logs: {logged or 'nothing'}"


def test_a_node_cut_off_pauses_rejoins_by_itself_and_no_confirmed_job_is_lost(cluster: Cluster, report) -> None:
    database_url = cluster.database_url
    cut = worker_node(cluster) or cluster.nodes[-1]  # the node a worker uses: it must move
    majority = [n for n in cluster.nodes if n != cut]
    conf = run_in(cut, "cat", "/etc/rabbitmq/rabbitmq.conf").stdout
    assert "cluster_partition_handling = pause_minority" in conf, "the role did not choose pause_minority"
    tick = int(run_in(cut, "rabbitmqctl", "--quiet", "eval", "net_kernel:get_net_ticktime().").stdout.strip())
    network, address = _address(cut)
    logged_before = len(_log_lines(cut))
    prefix = f"partition-{uuid.uuid4().hex[:8]}-"
    workers = worker_processes()
    publisher = Publisher(cluster, majority[0], prefix)
    publisher.start()
    time.sleep(3)
    cut_at = time.monotonic()
    podman("network", "disconnect", network, cut)
    paused_after = seen_down_after = None
    try:
        # Held apart past the net tick time, until the node says it paused (pause_minority) and the majority
        # sees it gone (each side notices on its own tick, seconds apart), at most three tick times.
        deadline = cut_at + 3 * tick
        while time.monotonic() < deadline and (paused_after is None or seen_down_after is None):
            elapsed = time.monotonic() - cut_at
            if paused_after is None and any(PAUSED in line for line in _log_lines(cut)[logged_before:]):
                paused_after = elapsed
            if seen_down_after is None and _sees_down(majority[0], cut):
                seen_down_after = elapsed
            time.sleep(2)
    finally:
        podman("network", "connect", "--ip", address, network, cut)
    reconnected_at = time.monotonic()
    try:
        rejoined = wait_running_nodes(majority[0], len(cluster.nodes), deadline_s=180)
        rejoin_s = time.monotonic() - reconnected_at
        time.sleep(3)
    finally:
        stopped_at = time.monotonic()
        publisher.stop.set()
        publisher.join(timeout=60)
    gap = publisher.longest_gap(cut_at, stopped_at)
    done = wait_recorded(database_url, prefix, len(publisher.confirmed), deadline_s=180, poll_s=1)
    partitions = _partitions(cluster.nodes)
    report.append(
        {
            "test": "partition",
            "cut_off": cut,
            "net_ticktime_s": tick,
            "paused_after_s": round(paused_after or -1, 1),
            "majority_saw_it_down_after_s": round(seen_down_after or -1, 1),
            "rejoined_after_s": round(rejoin_s, 1),
            "confirmed": len(publisher.confirmed),
            "recorded": done.distinct,
            "duplicates": done.duplicates,
            "longest_publish_gap_s": round(gap, 1),
            "publisher_errors": len(publisher.errors),
        }
    )
    assert paused_after is not None and paused_after > tick / 2, f"{cut} did not log that it paused in {3 * tick} s"
    assert seen_down_after is not None, f"the majority still saw {cut} running after {3 * tick} s"
    assert rejoined == len(cluster.nodes), f"{cut} did not rejoin by itself within 180 s"
    assert not any(partitions.values()), f"partitions left: {partitions}"
    assert publisher.confirmed, f"nothing was confirmed: {publisher.errors[-3:]}"
    if done.distinct != len(publisher.confirmed):
        where = where_missing_jobs_are(cluster, majority[0], database_url, prefix, publisher.confirmed)
        raise AssertionError(f"confirmed jobs not recorded: {done}; {where}")
    assert done.duplicates == 0, f"{done.duplicates} jobs recorded twice"
    assert_no_worker_restarted(workers)
