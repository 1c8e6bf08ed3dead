"""The firewall and the bound listeners, seen from outside: from prod-outsider, a container on the same network
that is no peer of anything, every side port is refused, while AMQPS answers. Each refusal has its control: the
same probe from the host that needs the port (or, for a loopback-only listener, from the host itself) connects,
so a refusal means the filter, not a dead listener. The table goes to reports/production/exposure.txt."""

from __future__ import annotations

import os

import pytest

from production import Deployment
from support.containers import podman, run_in

OUTSIDER = os.environ.get("PROD_OUTSIDER", "")
ACCOUNT_HOST = os.environ.get("PROD_ACCOUNT_HOST", "")
DATABASE = os.environ.get("PROD_DATABASE", "")
CLI_PORT = 35672  # the first of the CLI tools' ten distribution ports (rabbitmq_distribution_port + 10000)


def address(host: str) -> str:
    return podman(
        "inspect", host, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    ).stdout.strip()


def probe(source: str, target_address: str, port: int) -> str:
    """'open', 'refused' or 'timeout': a TCP connect from inside `source`."""
    result = run_in(source, "timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{target_address}/{port}", check=False)
    if result.returncode == 0:
        return "open"
    return "timeout" if result.returncode == 124 else "refused"


@pytest.fixture(scope="module")
def rows(deployment: Deployment):
    if not OUTSIDER:
        pytest.fail("PROD_OUTSIDER not set", pytrace=False)
    mq1, mq2 = deployment.brokers[0], deployment.brokers[1]
    worker, mon = deployment.workers[0], deployment.monitoring
    # (what, target host, port, the peer that needs it and the address it uses)
    checks = [
        ("epmd", mq1, 4369, mq2, None),
        ("Erlang distribution", mq1, 25672, mq2, None),
        ("CLI tools' range", mq1, CLI_PORT, mq2, None),
        ("Prometheus TLS", mq1, 15691, mon, None),
        ("Prometheus plain (loopback only)", mq1, 15692, mq1, "127.0.0.1"),
        ("management TLS", mq1, 15671, mq1, "127.0.0.1"),
        ("worker metrics", worker, 9191, mon, None),
        ("PostgreSQL", DATABASE, 5432, worker, None),
        ("account host SSH", ACCOUNT_HOST, 22, worker, None),
        ("AMQPS", mq1, 5671, worker, None),
    ]
    # Nothing listens in the CLI tools' range between calls: a listener on the node's address stands in for one.
    listener = ["python3", "-m", "http.server", "--bind", address(mq1), str(CLI_PORT)]
    podman("exec", "-d", mq1, *listener)
    wait = f"for i in $(seq 50); do ss -Htln 'sport = :{CLI_PORT}' | grep -q . && exit 0; sleep 0.2; done"
    run_in(mq1, "sh", "-c", wait)
    try:
        out = []
        for what, target, port, peer, peer_address in checks:
            target_address = address(target)
            out.append(
                {
                    "what": what,
                    "port": port,
                    "target": target,
                    "peer": peer,
                    "from_peer": probe(peer, peer_address or target_address, port),
                    "from_outside": probe(OUTSIDER, target_address, port),
                }
            )
    finally:
        run_in(mq1, "pkill", "-f", " ".join(listener), check=False)
    lines = [f"{'port':>6}  {'what':34} {'target':14} {'from the peer':22} from outside"]
    for r in out:
        peer = f"{r['from_peer']} ({r['peer']})"
        lines.append(f"{r['port']:>6}  {r['what']:34} {r['target']:14} {peer:22} {r['from_outside']}")
    deployment.reports.mkdir(parents=True, exist_ok=True)
    (deployment.reports / "exposure.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def test_every_side_port_is_refused_from_outside_and_open_to_its_peer(rows) -> None:
    table = "\n".join(str(r) for r in rows)
    for r in rows:
        assert r["from_peer"] == "open", f"control failed: {r['what']} not reachable from {r['peer']}\n{table}"
        if r["what"] == "AMQPS":
            assert r["from_outside"] == "open", f"AMQPS must answer everyone\n{table}"
        else:
            assert r["from_outside"] == "refused", f"{r['what']} ({r['port']}) answers from outside\n{table}"


def test_the_filter_is_loaded_on_every_host(deployment: Deployment) -> None:
    hosts = [*deployment.brokers, *deployment.workers, deployment.monitoring, ACCOUNT_HOST, DATABASE]
    for host in hosts:
        ruleset = run_in(host, "nft", "list", "table", "inet", "bundle_firewall").stdout
        assert "policy drop" in ruleset and "reject with tcp reset" in ruleset, f"{host}:\n{ruleset}"
        assert run_in(host, "systemctl", "is-enabled", "nftables").stdout.strip() == "enabled"
