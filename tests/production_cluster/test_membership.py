"""The cluster membership playbooks (playbooks/cluster-remove-node.yml, cluster-add-node.yml) on the live
cluster, while a confirmed publisher and the workers run: removal is refused below the minimum size and while
the node is quorum-critical; otherwise the last node leaves with every quorum queue keeping its majority and
no confirmed job lost, a re-run changes nothing, and the node is added back with the queues grown onto it."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

from cluster import (
    Cluster,
    Publisher,
    assert_no_worker_restarted,
    cluster_status,
    wait_running_nodes,
    worker_processes,
)
from support.db import wait_recorded
from support.playbooks import recap

CRITICAL = "bundle-membership-critical"


def quorum_members(cluster: Cluster, node: str) -> dict[str, list[str]]:
    """Members of each quorum queue of the test vhost, through node's management API."""
    queues = cluster.api(node, f"queues/{quote(cluster.vhost, safe='')}")
    return {q["name"]: sorted(q.get("members", [])) for q in queues if q.get("type") == "quorum"}


def test_removal_is_refused_below_the_minimum_size_and_while_the_node_is_quorum_critical(cluster: Cluster) -> None:
    leaving = cluster.nodes[-1]
    run, _ = cluster.playbook("cluster-remove-node.yml", "-e", f"cluster_node={leaving}")
    assert run.returncode != 0 and "cluster_min_size" in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr
    # A quorum queue whose only member is on the leaving node: it would be gone with it.
    conn = cluster.connect(leaving, "bundle-membership-test")
    try:
        ch = conn.channel()
        ch.queue_declare(CRITICAL, durable=True, arguments={"x-queue-type": "quorum",
                         "x-quorum-initial-group-size": 1, "x-queue-leader-locator": "client-local"})  # fmt: skip
        assert quorum_members(cluster, leaving)[CRITICAL] == [f"rabbit@{leaving}"]
        run, _ = cluster.playbook(
            "cluster-remove-node.yml", "-e", f"cluster_node={leaving}", "-e", "cluster_min_size=2"
        )
        said = run.stdout + run.stderr
        assert run.returncode != 0 and "quorum-critical" in said and CRITICAL in said, said[-3000:]
        ch.queue_delete(CRITICAL)
    finally:
        conn.close()
    assert len(cluster_status(cluster.nodes[0])["running_nodes"]) == len(cluster.nodes), "a refusal changed the cluster"


def test_a_node_leaves_under_load_and_comes_back_with_the_queues_grown_onto_it(cluster: Cluster, report) -> None:
    database_url = cluster.database_url
    leaving, staying = cluster.nodes[-1], cluster.nodes[0]
    name = f"rabbit@{leaving}"
    prefix = f"membership-{uuid.uuid4().hex[:8]}-"
    workers = worker_processes()
    publisher = Publisher(cluster, staying, prefix)
    publisher.start()
    try:
        time.sleep(3)
        removed, remove_s = cluster.playbook(
            "cluster-remove-node.yml", "-e", f"cluster_node={leaving}", "-e", "cluster_min_size=2"
        )
        assert removed.returncode == 0, removed.stdout[-4000:] + removed.stderr
        status = cluster_status(staying)
        assert name not in status["disk_nodes"] and len(status["running_nodes"]) == len(cluster.nodes) - 1, status
        after_removal = quorum_members(cluster, staying)
        assert after_removal and all(
            name not in m and len(m) == len(cluster.nodes) - 1 for m in after_removal.values()
        ), after_removal
        again, _ = cluster.playbook(
            "cluster-remove-node.yml", "-e", f"cluster_node={leaving}", "-e", "cluster_min_size=2"
        )
        assert again.returncode == 0 and all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[
            -3000:
        ]

        added, add_s = cluster.playbook("cluster-add-node.yml", "-e", f"cluster_node={leaving}")
        assert added.returncode == 0, added.stdout[-4000:] + added.stderr
        assert wait_running_nodes(staying, len(cluster.nodes), deadline_s=60) == len(cluster.nodes)
        after_adding = quorum_members(cluster, staying)
        assert all(name in m and len(m) == len(cluster.nodes) for m in after_adding.values()), after_adding
        time.sleep(3)
    finally:
        publisher.stop.set()
        publisher.join(timeout=60)
    done = wait_recorded(database_url, prefix, len(publisher.confirmed), deadline_s=180, poll_s=1)
    report.append(
        {
            "test": "membership",
            "node": leaving,
            "remove_playbook_s": round(remove_s, 1),
            "add_playbook_s": round(add_s, 1),
            "quorum_queues": len(after_adding),
            "confirmed": len(publisher.confirmed),
            "recorded": done.distinct,
            "duplicates": done.duplicates,
            "longest_publish_gap_s": round(publisher.longest_gap(publisher.times[0], publisher.times[-1]), 1)
            if publisher.times
            else -1,
            "publisher_errors": len(publisher.errors),
        }
    )
    assert publisher.confirmed, f"nothing was confirmed: {publisher.errors[-3:]}"
    assert done.distinct == len(publisher.confirmed), f"confirmed jobs not recorded: {done}"
    assert done.duplicates == 0, f"{done.duplicates} jobs recorded twice"
    assert_no_worker_restarted(workers)
