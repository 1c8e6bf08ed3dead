"""Helpers of the cluster tests (and messages.py): where the nodes are, AMQP and HTTP clients, node control.
The CLUSTER_* environment (molecule/resources/cluster_chaos.yml) is read here and nowhere else."""

from __future__ import annotations

import itertools
import json
import os
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import pika
import pika.exceptions
import requests

from support.containers import kill_service, run_in, start_service
from support.jobs import publish_job
from support.playbooks import run_playbook

APIKEY = os.environ.get("CLUSTER_APIKEY") or "cluster"  # the workers' WORKER_APIKEY, when they check one
WORKER = os.environ.get("CLUSTER_WORKER_NAME") or "account-worker"  # the inventory's worker_name


@dataclass(frozen=True)
class Cluster:
    nodes: list[str]  # container names = hostnames (node rabbit@<name>)
    amqp_ports: list[int]
    management_ports: list[int]
    user: str
    password: str
    admin_password: str
    vhost: str
    ca_file: str = ""  # set: the nodes are reached over amqps:// and https://, verified with this CA
    name: str = ""  # the cluster_name every node reports
    database_url: str = ""  # the jobs' database as the controller reaches it
    inventory: str = ""  # the inventory the bundle's playbooks run against (the membership tests)
    ansible_playbook: str = "ansible-playbook"

    @classmethod
    def from_env(cls) -> Cluster:
        return cls(
            nodes=os.environ["CLUSTER_NODES"].split(","),
            amqp_ports=[int(p) for p in os.environ["CLUSTER_AMQP_PORTS"].split(",")],
            management_ports=[int(p) for p in os.environ.get("CLUSTER_MANAGEMENT_PORTS", "").split(",") if p],
            user=os.environ["CLUSTER_APP_USER"],
            password=os.environ["CLUSTER_APP_PASSWORD"],
            admin_password=os.environ.get("CLUSTER_ADMIN_PASSWORD", ""),
            vhost=os.environ["CLUSTER_VHOST"],
            ca_file=os.environ.get("CLUSTER_CA_FILE", "").strip(),
            name=os.environ.get("CLUSTER_NAME", ""),
            database_url=os.environ.get("CLUSTER_DATABASE_URL", ""),
            inventory=os.environ.get("CLUSTER_INVENTORY", ""),
            ansible_playbook=os.environ.get("CLUSTER_ANSIBLE_PLAYBOOK") or "ansible-playbook",
        )

    def playbook(self, name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """Run playbooks/<name> against the cluster's inventory; the run and how long it took."""
        if not self.inventory:
            raise RuntimeError("CLUSTER_INVENTORY not set (run through molecule/resources/cluster_chaos.yml)")
        started = time.monotonic()
        run = run_playbook(self.ansible_playbook, self.inventory, f"playbooks/{name}", *args)
        return run, time.monotonic() - started

    def url(self, node: str) -> str:
        port = self.amqp_ports[self.nodes.index(node)]
        user, password, vhost = (quote(v, safe="") for v in (self.user, self.password, self.vhost))
        scheme = "amqps" if self.ca_file else "amqp"
        return f"{scheme}://{user}:{password}@127.0.0.1:{port}/{vhost}"

    def connect(self, node: str, name: str = "bundle-cluster-test") -> pika.BlockingConnection:
        params = pika.URLParameters(self.url(node))
        params.client_properties = {"connection_name": name}
        params.socket_timeout = 10
        params.blocked_connection_timeout = 30
        params.connection_attempts = 1
        if self.ca_file:
            params.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=self.ca_file), "127.0.0.1")
        return pika.BlockingConnection(params)

    def connect_any(self, name: str = "bundle-cluster-test") -> pika.BlockingConnection:
        errors = []
        for node in self.nodes:
            try:
                return self.connect(node, name)
            except pika.exceptions.AMQPConnectionError as exc:
                errors.append(f"{node}: {exc!r}")
        raise RuntimeError("no cluster node accepts connections: " + "; ".join(errors))

    def api(self, node: str, path: str):
        port = self.management_ports[self.nodes.index(node)]
        scheme, verify = ("https", self.ca_file) if self.ca_file else ("http", True)
        r = requests.get(
            f"{scheme}://127.0.0.1:{port}/api/{path}", auth=("admin", self.admin_password), timeout=10, verify=verify
        )
        r.raise_for_status()
        return r.json()


def worker_node(cluster: Cluster) -> str | None:
    """The node a deployed worker instance is connected to (None: none found)."""
    for node in cluster.nodes:
        try:
            conns = cluster.api(node, "connections")
        except Exception:
            continue
        for c in conns:
            if str(c.get("client_properties", {}).get("connection_name", "")).startswith(f"{WORKER}@"):
                return c["node"].split("@", 1)[1]
    return None


def worker_services(host: str) -> list[str]:
    """The worker instances deployed on host: their runit service directories, /etc/service/<name>-N."""
    return run_in(host, "sh", "-c", f"ls -1d /etc/service/{WORKER}-[0-9]*", check=False).stdout.split()


def worker_hosts() -> list[str]:
    """The hosts the scenario deployed workers on (CLUSTER_WORKER_HOSTS, comma-separated; none when unset)."""
    return [host for host in os.environ.get("CLUSTER_WORKER_HOSTS", "").split(",") if host]


def worker_processes() -> dict[str, str]:
    """Each deployed worker instance ("host service") and its process as runit reports it ("pid N", or the
    state when it does not run): equal before and after a test means no instance exited meanwhile (the worker
    rides out broker trouble inside its process; a restart is a crash, see /var/log/<name>-N/current)."""
    found: dict[str, str] = {}
    for host in worker_hosts():
        services = worker_services(host)
        out = run_in(host, "sv", "status", *services, check=False).stdout if services else ""
        for line in out.splitlines():
            match = re.match(r"(\w+): /etc/service/([^:]+): (?:\(pid (\d+)\))?", line)
            if match:
                state, service, pid = match.groups()
                found[f"{host} {service}"] = f"pid {pid}" if pid else state
    return found


def assert_no_worker_restarted(before: dict[str, str]) -> None:
    after = worker_processes()
    changed = {k: f"{v} -> {after.get(k)}" for k, v in before.items() if after.get(k) != v}
    assert not changed, f"worker instances exited meanwhile (read their logs): {changed}"


def cluster_status(node: str) -> dict:
    out = run_in(node, "rabbitmqctl", "--quiet", "--formatter", "json", "cluster_status").stdout
    return json.loads(out)


def wait_running_nodes(node: str, expected: int, deadline_s: float = 180) -> int:
    deadline = time.monotonic() + deadline_s
    running = 0
    while time.monotonic() < deadline:
        try:
            running = len(cluster_status(node)["running_nodes"])
        except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError):
            running = 0
        if running >= expected:
            return running
        time.sleep(2)
    return running


def kill_node(node: str) -> None:
    """SIGKILL the node's Erlang VM and keep the service down until start_node."""
    kill_service(node, "rabbitmq-server")


def start_node(node: str) -> None:
    start_service(node, "rabbitmq-server", timeout=180)


def take_all(channel, queue: str, idle_s: float = 5.0) -> set[int]:
    """Consume (and ack) every message of queue; their bodies are numbers.

    One consumer with a large prefetch rather than a basic_get per message: it stops once
    it has taken what the queue held when it started and nothing more came for idle_s.
    """
    held = channel.queue_declare(queue, passive=True).method.message_count
    channel.basic_qos(prefetch_count=1000)
    received: set[int] = set()
    idle = 0.0
    for method, _, body in channel.consume(queue, inactivity_timeout=1.0):
        if method is None:
            idle += 1.0
            # What the queue held is taken and a second passed without more, or idle_s without any.
            if len(received) >= held or idle >= idle_s:
                break
            continue
        idle = 0.0
        received.add(int(body))
        channel.basic_ack(method.delivery_tag)
    channel.cancel()
    return received


def publish_confirmed(
    cluster: Cluster, node: str, queue: str, count: int, *, publishers: int = 1, on_progress=None
) -> set[int]:
    """Publish the numbers 0..count-1 to queue through node, each with a publisher confirm.

    `publishers` connections publish interleaved shares side by side (a confirm waits for
    the quorum queue's commit, so one connection alone spends most of its time waiting).
    on_progress(sent_so_far) is called from the publishing threads. Returns the numbers the
    broker confirmed; a nack or a return leaves a number out; a connection error is raised.
    """
    confirmed: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()
    sent = [0]

    def run(share: range) -> None:
        try:
            conn = cluster.connect(node, "bundle-cluster-publisher")
            ch = conn.channel()
            ch.confirm_delivery()
            for i in share:
                with lock:
                    sent[0] += 1
                    so_far = sent[0]
                if on_progress is not None:
                    on_progress(so_far)
                try:
                    ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
                except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                    continue  # not confirmed: the broker did not take responsibility for it
                with lock:
                    confirmed.add(i)
            conn.close()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(range(k, count, publishers),)) for k in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return confirmed


class Publisher(threading.Thread):
    """Publishes jobs with confirms through one node until stopped; notes each confirm's time."""

    def __init__(self, cluster: Cluster, node: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.node, self.prefix = cluster, node, prefix
        self.stop = threading.Event()
        self.confirmed: list[str] = []
        self.times: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                conn = self.cluster.connect(self.node, "bundle-partition-publisher")
                ch = conn.channel()
                ch.confirm_delivery()
                while not self.stop.is_set():
                    message_id = f"{self.prefix}{i:05d}"
                    i += 1
                    try:
                        publish_job(ch, message_id, "1234", apikey=APIKEY)
                    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                        self.errors.append(f"{message_id}: {exc!r}")
                        continue
                    self.confirmed.append(message_id)
                    self.times.append(time.monotonic())
                    time.sleep(0.05)
                conn.close()
            except pika.exceptions.AMQPError as exc:  # reconnect: the test fails on lost confirms, not on this
                self.errors.append(repr(exc))
                time.sleep(1)

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without a confirm between since and until."""
        times = [since] + [t for t in self.times if since <= t <= until] + [until]
        return max(b - a for a, b in itertools.pairwise(times))
