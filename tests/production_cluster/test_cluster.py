"""A 3-node RabbitMQ cluster: membership, quorum replication, and losing a node under load."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid

import pytest

from cluster import (
    APIKEY,
    WORKER,
    Cluster,
    assert_no_worker_restarted,
    cluster_status,
    kill_node,
    publish_confirmed,
    start_node,
    take_all,
    wait_running_nodes,
    worker_hosts,
    worker_node,
    worker_processes,
    worker_services,
)
from support.containers import podman, run_in
from support.db import recorded, wait_recorded
from support.jobs import publish_job

MESSAGES = 10_000
PUBLISHERS = 5  # connections publishing side by side, each waiting for its confirms


def test_three_running_disk_nodes_one_name_same_versions(cluster: Cluster) -> None:
    for node in cluster.nodes:
        status = cluster_status(node)
        expected = {f"rabbit@{n}" for n in cluster.nodes}
        assert set(status["disk_nodes"]) == expected
        assert set(status["running_nodes"]) == expected
        assert status["cluster_name"] == cluster.name
        versions = status["versions"]
        assert len({v["rabbitmq_version"] for v in versions.values()}) == 1
        assert len({v["erlang_version"] for v in versions.values()}) == 1


def test_work_queue_is_replicated_to_every_node(cluster: Cluster) -> None:
    queue = cluster.api(cluster.nodes[0], f"queues/{cluster.vhost}/jobs")
    assert queue["type"] == "quorum"
    assert set(queue["members"]) == {f"rabbit@{n}" for n in cluster.nodes}
    assert set(queue["online"]) == set(queue["members"])


def test_losing_a_node_under_load_loses_no_confirmed_message(cluster: Cluster, report) -> None:
    """Kill the queue's leader a third of the way through 10,000 confirmed publishes; every confirmed one survives."""
    queue = f"node-loss-{uuid.uuid4().hex[:8]}"
    setup = cluster.connect(cluster.nodes[0])
    setup.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    setup.close()
    leader = cluster.api(cluster.nodes[0], f"queues/{cluster.vhost}/{queue}")["leader"].split("@", 1)[1]
    publish_node = next(n for n in cluster.nodes if n != leader)

    killed = threading.Event()

    def kill_leader_a_third_in(sent: int) -> None:
        if sent >= MESSAGES // 3 and not killed.is_set():
            killed.set()
            kill_node(leader)  # in the publishing thread that got there: the others go on publishing

    try:
        confirmed = publish_confirmed(
            cluster, publish_node, queue, MESSAGES, publishers=PUBLISHERS, on_progress=kill_leader_a_third_in
        )
        survivor = cluster.connect(publish_node)
        received = take_all(survivor.channel(), queue)
        survivor.close()
    finally:
        start_node(leader)
    lost = confirmed - received
    report.append(
        {
            "test": "node loss",
            "sent": MESSAGES,
            "publishers": PUBLISHERS,
            "confirmed": len(confirmed),
            "received": len(received),
            "lost_confirmed": len(lost),
            "killed": leader,
        }
    )
    assert len(confirmed) >= MESSAGES * 0.9, "most publishes should be confirmed by the surviving majority"
    assert not lost, f"{len(lost)} confirmed messages were lost"

    assert wait_running_nodes(cluster.nodes[0], len(cluster.nodes)) == len(cluster.nodes), (
        f"{leader} did not rejoin the cluster"
    )
    deadline = time.monotonic() + 120
    online: list[str] = []
    while time.monotonic() < deadline:
        online = cluster.api(cluster.nodes[0], f"queues/{cluster.vhost}/{queue}").get("online", [])
        if len(online) == len(cluster.nodes):
            break
        time.sleep(2)
    assert len(online) == len(cluster.nodes), f"the queue's replica on {leader} did not come back: {online}"
    cleanup = cluster.connect(publish_node)
    cleanup.channel().queue_delete(queue)
    cleanup.close()


def test_worker_keeps_processing_through_the_loss_of_its_node(cluster: Cluster, report) -> None:
    database_url = cluster.database_url
    deadline = time.monotonic() + 60
    node = None
    while node is None and time.monotonic() < deadline:
        node = worker_node(cluster)
        time.sleep(1)
    assert node, "no worker connection found on any node"
    publish_node = next(n for n in cluster.nodes if n != node)
    prefix = f"cluster-{uuid.uuid4().hex[:8]}-"
    workers = worker_processes()
    conn = cluster.connect(publish_node)
    ch = conn.channel()
    ch.confirm_delivery()
    jobs = 600
    try:
        for i in range(jobs):
            if i == jobs // 3:
                kill_node(node)
            publish_job(ch, f"{prefix}{i:04d}", "1234", apikey=APIKEY)
        conn.close()
        done = wait_recorded(database_url, prefix, jobs, deadline_s=180, poll_s=1).distinct
    finally:
        start_node(node)
    report.append({"test": "worker through node loss", "jobs": jobs, "recorded": done, "killed": node})
    assert done == jobs
    assert wait_running_nodes(cluster.nodes[0], len(cluster.nodes)) == len(cluster.nodes)
    assert worker_node(cluster), "the worker is not connected after the node came back"
    assert_no_worker_restarted(workers)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_node_answers_amqp(cluster: Cluster, index: int) -> None:
    conn = cluster.connect(cluster.nodes[index])
    assert conn.is_open
    conn.close()


PROBE_CA = "/tmp/tls-probe-ca.crt"
PROBE_PID = "/tmp/tls-probe.pid"


def test_a_broker_certificate_from_another_ca_is_refused_and_no_job_is_lost(cluster: Cluster, tmp_path, report) -> None:
    """A worker trusting a throwaway CA refuses every node with one clear line each and keeps retrying;
    the job published meanwhile waits in the queue and is processed once the right CA is back in place
    (the worker reads its CA file on every attempt: same process, no restart)."""
    if not cluster.ca_file:
        pytest.skip("the brokers of this release serve plain AMQP")
    hosts, database_url = worker_hosts(), cluster.database_url
    assert hosts, "CLUSTER_WORKER_HOSTS names no worker host"
    host = hosts[0]  # the probe runs here; every host's deployed instances are stopped
    other_key, other_ca = tmp_path / "other-ca.key", tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(other_key), "-out", str(other_ca), "-days", "1", "-subj", "/CN=throwaway CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    podman("cp", str(other_ca), f"{host}:{PROBE_CA}")
    run_in(host, "chmod", "0644", PROBE_CA)
    services = {h: worker_services(h) for h in hosts}
    assert all(services.values()), f"no worker instance on some worker host: {services}"
    for h in hosts:
        run_in(h, "sv", "stop", *services[h])  # the deployed instances must not take the job
    message_id = f"tls-probe-{uuid.uuid4().hex[:8]}"
    probe = None
    try:
        conn = cluster.connect_any()
        ch = conn.channel()
        ch.confirm_delivery()
        publish_job(ch, message_id, "1234", apikey=APIKEY)
        conn.close()
        # The deployed environment, with the throwaway CA in place of the sandbox CA (HOME as under
        # runit: libpq reads ~/.postgresql of the user it runs as).
        probe = subprocess.Popen(
            ["podman", "exec", host, "sh", "-c",
             f"echo $$ > {PROBE_PID}; exec chpst -u {WORKER}:{WORKER} -e /etc/{WORKER}/env "
             f"env HOME=/opt/{WORKER} WORKER_AMQP_CA_FILE={PROBE_CA} /opt/{WORKER}/venv/bin/account-worker"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        refused: dict[str, str] = {}
        lines: list[str] = []
        assert probe.stderr is not None
        while len(refused) < len(cluster.nodes) or not any("event=amqp_unavailable" in line for line in lines):
            line = probe.stderr.readline()
            assert line, f"the worker exited: {lines[-5:]}"
            lines.append(line)
            assert "event=amqp_connected" not in line, "connected although the broker's CA is not trusted"
            if "event=amqp_tls_refused" in line:
                refused[line.split("broker=", 1)[1].split(":", 1)[0]] = line.strip()
        assert set(refused) == set(cluster.nodes)
        for line in refused.values():
            assert line.startswith("level=ERROR event=amqp_tls_refused url=amqps://"), line
            # OpenSSL's words depend on whether the broker sends its CA along with its certificate.
            assert re.search(
                r'error="certificate verify failed: (unable to get local issuer certificate|self-signed '
                r'certificate in certificate chain)"',
                line,
            ), line
            assert cluster.password not in line
        assert recorded(database_url, message_id).distinct == 0
        # The right CA in place: the same process connects on its next attempt and takes the job.
        run_in(host, "cp", f"/etc/{WORKER}/tls/amqp-ca.crt", PROBE_CA)
        done = wait_recorded(database_url, message_id, 1, deadline_s=120, poll_s=1)
        while not any("event=amqp_connected" in line for line in lines):
            lines.append(probe.stderr.readline())
    finally:
        if probe is not None:
            run_in(host, "sh", "-c", f"kill $(cat {PROBE_PID})", check=False)
            probe.wait(timeout=30)
        for h in hosts:
            run_in(h, "sv", "start", *services[h])
        run_in(host, "rm", "-f", PROBE_CA, PROBE_PID)
    report.append({"test": "worker trusting another CA", "refused_nodes": len(refused), "job_recorded": done.distinct})
    assert done.distinct == 1 and done.duplicates == 0
