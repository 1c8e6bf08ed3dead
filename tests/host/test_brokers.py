"""Host checks of a broker provisioned by the rabbitmq role (testinfra).

Run: pytest tests/host/test_brokers.py --hosts=podman://CONTAINER (or ssh://host).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from sandboxing import assert_sandboxed

ROLE = Path(__file__).resolve().parents[2] / "roles" / "rabbitmq"
COMPAT = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_rabbitmq_erlang_compat"]


def ctl_json(host, *args: str):
    out = host.check_output("rabbitmqctl --quiet --formatter json " + " ".join(args))
    return json.loads(out)


@pytest.mark.parametrize("package", ["rabbitmq-server", "erlang-base", "erlang-ssl"])
def test_packages_installed(host, package: str) -> None:
    assert host.package(package).is_installed


def test_erlang_meta_package_not_installed(host) -> None:
    assert not host.package("erlang").is_installed
    assert not host.package("erlang-wx").is_installed


def test_version_pair_is_supported(host) -> None:
    rabbit = host.package("rabbitmq-server").version
    otp = host.package("erlang-base").version
    series = re.match(r"^(?:\d+:)?(\d+\.\d+)", rabbit).group(1)
    major = int(re.match(r"^(?:\d+:)?(\d+)", otp).group(1))
    assert COMPAT[series]["min"] <= major <= COMPAT[series]["max"]
    # What runs is what is installed.
    running = host.check_output("rabbitmqctl --quiet version").strip()
    assert re.sub(r"^\d+:", "", rabbit).startswith(running)


def test_distro_series(host) -> None:
    expected = {"12": "3.10.", "13": "4.0."}[host.system_info.release.split(".")[0]]
    assert host.package("rabbitmq-server").version.startswith(expected)


def test_service_running_and_enabled(host) -> None:
    service = host.service("rabbitmq-server")
    assert service.is_running
    assert service.is_enabled


def rabbitmq_conf(host) -> dict[str, str]:
    text = host.file("/etc/rabbitmq/rabbitmq.conf").content_string
    return dict(re.findall(r"^([\w.]+) = (.*)$", text, re.M))


def listens_everywhere(host, port: int) -> bool:
    return host.socket(f"tcp://0.0.0.0:{port}").is_listening or host.socket(f"tcp://:::{port}").is_listening


def listens_at_all(host, port: int) -> bool:
    return bool(host.run(f"ss -Htln 'sport = :{port}'").stdout.strip())


def listening_addresses(host, port: int) -> set[str]:
    lines = host.run(f"ss -Htln 'sport = :{port}'").stdout.splitlines()
    return {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in lines if line.strip()}


def test_distribution_listens_on_the_node_address_only(host) -> None:
    """25672 and epmd's 4369 answer on the address the node's name resolves to (epmd on loopback too), not on
    every interface: whoever reaches them with the cookie runs code on the node."""
    env = host.file("/etc/rabbitmq/rabbitmq-env.conf").content_string
    node_host = re.search(r"^NODENAME=\S+@(\S+)$", env, re.M)[1]
    address = host.check_output(f"getent ahostsv4 {node_host}").split()[0]
    assert listening_addresses(host, 25672) == {address}
    assert listening_addresses(host, 4369) == {"127.0.0.1", address}
    conf = rabbitmq_conf(host)
    assert conf["distribution.listener.interface"] == address
    assert conf["distribution.listener.port_range.min"] == conf["distribution.listener.port_range.max"] == "25672"


def test_client_listeners(host) -> None:
    """Plaintext AMQP and HTTP everywhere unless TLS-only (then HTTP, metrics on 127.0.0.1); AMQPS, HTTPS with TLS."""
    conf = rabbitmq_conf(host)
    tls, tls_only = "listeners.ssl.default" in conf, conf.get("listeners.tcp") == "none"
    if tls:
        assert listens_everywhere(host, int(conf["listeners.ssl.default"]))
        assert listens_everywhere(host, int(conf["management.ssl.port"]))
        if "prometheus.ssl.port" in conf:
            assert listens_everywhere(host, int(conf["prometheus.ssl.port"]))
    if tls_only:
        assert not listens_at_all(host, 5672), "TLS-only, yet something listens on 5672"
        port = int(conf["management.tcp.port"])
        assert conf.get("management.tcp.ip") == "127.0.0.1"
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not listens_everywhere(host, port), f"TLS-only, yet {port} listens beyond 127.0.0.1"
        if "prometheus.ssl.port" in conf:  # the metrics plugin: plaintext 15692 for local scrapes only
            assert conf.get("prometheus.tcp.ip") == "127.0.0.1"
            assert host.socket("tcp://127.0.0.1:15692").is_listening
            assert not listens_everywhere(host, 15692), "TLS-only, yet 15692 listens beyond 127.0.0.1"
    else:
        assert listens_everywhere(host, 5672)
        assert listens_everywhere(host, 15672)


def test_tls_files(host) -> None:
    """Certificate and CA readable by the broker's group; the key too, and by nobody else."""
    if "listeners.ssl.default" not in rabbitmq_conf(host):
        pytest.skip("TLS is off on this broker")
    assert host.file("/etc/rabbitmq/tls").mode == 0o750
    for name in ("ca.pem", "cert.pem", "key.pem"):
        f = host.file(f"/etc/rabbitmq/tls/{name}")
        assert (f.user, f.group, f.mode) == ("root", "rabbitmq", 0o640), name


@pytest.mark.parametrize(
    ("path", "mode", "group"),
    [
        ("/etc/rabbitmq/rabbitmq.conf", 0o640, "rabbitmq"),
        ("/etc/rabbitmq/rabbitmq-env.conf", 0o640, "rabbitmq"),
        ("/etc/systemd/system/rabbitmq-server.service.d/limits.conf", 0o644, "root"),
    ],
)
def test_config_files(host, path: str, mode: int, group: str) -> None:
    f = host.file(path)
    assert f.is_file
    assert f.mode == mode
    assert f.user == "root"
    assert f.group == group


def test_node_name_is_stable(host) -> None:
    env = host.file("/etc/rabbitmq/rabbitmq-env.conf").content_string
    nodename = re.search(r"^NODENAME=(\S+)$", env, re.M).group(1)
    running = host.check_output("rabbitmqctl --quiet eval 'node().'").strip().strip("'")
    assert running == nodename


def test_open_files_limit(host) -> None:
    pid = host.check_output("systemctl show --property MainPID --value rabbitmq-server")
    limits = host.file(f"/proc/{pid}/limits").content_string
    soft = re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1)
    assert int(soft) >= 65536 or int(soft) == 20000  # capped by the container's own hard limit


def test_service_is_sandboxed(host) -> None:
    """rabbitmq_systemd_hardening (on in every test inventory): the drop-in is in force, the running node lives
    in it with no capability at all; systemd-analyze's exposure score says how much (9.4 UNSAFE without it on
    Debian 13)."""
    props = assert_sandboxed(host, "rabbitmq-server")
    assert props["CapabilityBoundingSet"] in ("", "0"), props


def test_users_and_tags(host) -> None:
    users = {u["user"]: u["tags"] for u in ctl_json(host, "list_users")}
    assert "guest" not in users
    assert "administrator" in users["admin"]
    assert "app" in users
    assert users["app"] in ([], "", "[]")


def test_app_permissions(host) -> None:
    perms = ctl_json(host, "list_user_permissions", "app")
    assert {"vhost": "app", "configure": ".*", "write": ".*", "read": ".*"} in perms


def test_plugins_enabled(host) -> None:
    out = host.check_output("rabbitmq-plugins --quiet list --enabled --formatter json")
    names = {p["name"] for p in json.loads(out)["plugins"]}
    assert "rabbitmq_management" in names


def test_work_queue_is_quorum_where_workers_need_it(host) -> None:
    """The worker role declares the work queue (quorum), its DLQ and its policy on the brokers when the
    inventory has workers; a brokers-only inventory gets none of them (nothing is declared for nobody)."""
    queues = {q["name"]: q for q in ctl_json(host, "list_queues", "-p", "app", "name", "type", "policy")}
    if os.environ.get("HOST_INVENTORY_HAS_WORKERS", "1") == "0":
        assert not {"jobs", "jobs.retry", "jobs.dlq"} & set(queues), sorted(queues)
        return
    assert queues["jobs"]["type"] == "quorum"
    assert queues["jobs"]["policy"] == "jobs-dead-letter"
    assert queues["jobs.dlq"]["type"] == "quorum"


def test_no_stable_feature_flag_left_disabled(host) -> None:
    flags = ctl_json(host, "list_feature_flags", "name", "state", "stability")
    assert flags, "no feature flags listed"
    disabled = [f["name"] for f in flags if f["stability"] in ("stable", "required") and f["state"] != "enabled"]
    assert not disabled, f"stable feature flags still disabled: {disabled}"


def test_health_checks_pass(host) -> None:
    checks = ["check_running", "check_local_alarms"]
    conf = rabbitmq_conf(host)
    if conf.get("listeners.tcp") == "none":
        # TLS-only: the management listener answers on 127.0.0.1 only, not at the node's name.
        ports = [conf["listeners.ssl.default"], conf["management.ssl.port"], conf["management.tcp.port"]]
        checks += [f"check_port_listener {port}" for port in ports]
    else:
        checks.append("check_port_connectivity")
    for check in checks:
        host.run_expect([0], f"rabbitmq-diagnostics --quiet {check}")


def test_inter_node_tls(host) -> None:
    """With inter-node TLS, the node and the CLI tools run the distribution over TLS,
    and the distribution port refuses a client without a certificate."""
    if "inet_tls" not in host.file("/etc/rabbitmq/rabbitmq-env.conf").content_string:
        pytest.skip("inter-node TLS is off on this broker")
    assert "inet_tls" in host.check_output("rabbitmqctl --quiet eval 'init:get_argument(proto_dist).' </dev/null")
    tls = "/etc/rabbitmq/tls"
    address = host.check_output("sed -n 's/^distribution.listener.interface = //p' /etc/rabbitmq/rabbitmq.conf")
    probe = f"echo | timeout 10 openssl s_client -connect {address}:25672 -CAfile {tls}/ca.pem"
    with_cert = host.run(f"{probe} -cert {tls}/cert.pem -key {tls}/key.pem 2>&1")
    assert "Verify return code: 0 (ok)" in with_cert.stdout, with_cert.stdout
    without = host.run(f"{probe} 2>&1")
    assert re.search(r"alert (handshake failure|certificate required)", without.stdout), without.stdout
