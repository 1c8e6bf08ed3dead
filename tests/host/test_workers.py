"""Host checks of a worker host (roles runit, postgresql_client, worker)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from sandboxing import assert_sandboxed

NAME = "account-worker"


def instances(host) -> list[str]:
    out = host.check_output(f"ls -1 /etc/service | grep -E '^{NAME}-[0-9]+$' || true")
    return out.split()


def test_runsvdir_scans_etc_service(host) -> None:
    assert host.process.filter(comm="runsvdir")
    assert any("/etc/service" in p.args for p in host.process.filter(comm="runsvdir"))


def test_every_instance_and_its_logger_are_up(host) -> None:
    names = instances(host)
    assert names, "no worker instance is linked into /etc/service"
    for name in names:
        status = host.check_output(f"sv status /etc/service/{name}")
        assert status.startswith("run:"), status
        assert "; run: log:" in status, status


def test_worker_runs_unprivileged(host) -> None:
    procs = [p for p in host.process.filter(user=NAME) if "bin/account-worker" in p.args]
    assert len(procs) == len(instances(host))
    assert not [p for p in host.process.filter(user="root") if "bin/account-worker" in p.args]


def test_supervisor_and_instances_are_sandboxed(host) -> None:
    """runit_systemd_hardening (on in every test inventory): runit.service's drop-in is in force, and each
    instance, started by that runsvdir, lives in its sandbox (no new privileges; capabilities bounded to
    CAP_KILL, CAP_SETGID, CAP_SETUID: 0xe0); systemd-analyze's score says how much (9.6 UNSAFE without)."""
    assert_sandboxed(host, "runit")
    procs = [p for p in host.process.filter(user=NAME) if "bin/account-worker" in p.args]
    assert procs, "no worker process"
    for proc in procs:
        status = dict(
            line.split(":\t", 1) for line in host.file(f"/proc/{proc.pid}/status").content_string.splitlines()
        )
        assert status["NoNewPrivs"].strip() == "1", (proc.pid, status["NoNewPrivs"])
        assert int(status["CapBnd"], 16) == 0xE0, (proc.pid, status["CapBnd"])


def test_svlogd_runs_as_the_log_user(host) -> None:
    loggers = host.process.filter(comm="svlogd")
    assert loggers
    assert all(p.user == f"{NAME}-log" for p in loggers)
    assert all("-tt" in p.args for p in loggers)


def test_logs_have_tai_timestamps(host) -> None:
    for name in instances(host):
        current = host.file(f"/var/log/{name}/current")
        assert current.exists
        lines = [line for line in current.content_string.splitlines() if line]
        assert lines, f"{name} has logged nothing"
        # svlogd -tt: "2026-11-23_18:48:34.23988 " then the worker's own line.
        assert all(re.match(r"^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+ ", line) for line in lines[-20:])
        assert any("event=consuming" in line for line in lines)


def test_log_rotation_settings(host) -> None:
    for name in instances(host):
        config = host.file(f"/var/log/{name}/config").content_string.split()
        assert any(c.startswith("s") and c[1:].isdigit() for c in config)
        assert any(c.startswith("n") and c[1:].isdigit() for c in config)


def test_envdir_is_private(host) -> None:
    envdir = host.file(f"/etc/{NAME}/env")
    assert envdir.is_directory
    assert envdir.mode == 0o750
    assert (envdir.user, envdir.group) == ("root", NAME)
    for var in ("WORKER_AMQP_URLS", "WORKER_DATABASE_URL"):
        f = host.file(f"/etc/{NAME}/env/{var}")
        assert f.mode == 0o640
        assert (f.user, f.group) == ("root", NAME)


def test_secrets_not_in_logs(host) -> None:
    url = host.file(f"/etc/{NAME}/env/WORKER_DATABASE_URL").content_string.strip()
    password = urlsplit(url).password
    assert password
    for name in instances(host):
        assert password not in host.file(f"/var/log/{name}/current").content_string


def test_run_script_drops_privileges_with_the_envdir(host) -> None:
    run = host.file(f"/etc/sv/{NAME}-1/run").content_string
    assert f"chpst -u {NAME}:{NAME} -e /etc/{NAME}/env" in run


def test_virtualenv_has_the_worker(host) -> None:
    out = host.check_output(f"/opt/{NAME}/venv/bin/python -c 'import account_worker, pika, psycopg; print(\"ok\")'")
    assert out == "ok"


@pytest.mark.parametrize("package", ["runit", "libpq5"])
def test_packages(host, package: str) -> None:
    assert host.package(package).is_installed


def test_psql_reaches_the_database_with_the_deployed_credentials(host) -> None:
    url = urlsplit(host.file(f"/etc/{NAME}/env/WORKER_DATABASE_URL").content_string.strip())
    pgpass = host.file(f"/opt/{NAME}/.pgpass")
    assert pgpass.mode == 0o600 and pgpass.user == NAME
    # -w: never prompt; the password comes from the worker user's .pgpass.
    cmd = (
        f"runuser -u {NAME} -- psql -w -h {url.hostname} -p {url.port or 5432} -U {url.username} "
        f"-d {url.path.lstrip('/')} -tAc 'SELECT count(*) FROM accounts'"
    )
    assert int(host.check_output(cmd)) >= 1


def test_every_instance_serves_metrics_on_the_port_its_run_script_names(host) -> None:
    for name in instances(host):
        run = host.file(f"/etc/sv/{name}/run").content_string
        port = re.search(r"WORKER_METRICS_PORT=(\d+)", run)
        if port is None:
            continue  # worker_metrics_port: 0 (metrics off)
        address = host.file(f"/etc/{NAME}/env/WORKER_METRICS_ADDRESS").content_string.strip()
        assert address and not address.startswith("127."), f"metrics on {address!r}: the monitoring host cannot scrape"
        assert host.socket(f"tcp://{address}:{port.group(1)}").is_listening, (name, address, port.group(1))
        # One address only, unless the inventory asked for every one.
        assert address == "0.0.0.0" or not host.socket(f"tcp://0.0.0.0:{port.group(1)}").is_listening


def _tls_env(host) -> dict[str, str]:
    """The worker's TLS settings (WORKER_*_FILE / _CERT / _KEY) present in its envdir."""
    names = ("WORKER_AMQP_CA_FILE", "WORKER_AMQP_CLIENT_CERT", "WORKER_AMQP_CLIENT_KEY", "WORKER_DATABASE_CA_FILE")
    return {
        n: host.file(f"/etc/{NAME}/env/{n}").content_string.strip()
        for n in names
        if host.file(f"/etc/{NAME}/env/{n}").exists
    }


def test_tls_files_and_urls(host) -> None:
    """With a broker CA every URL is amqps:// and the files are where the envdir says, key private."""
    tls = _tls_env(host)
    urls = host.file(f"/etc/{NAME}/env/WORKER_AMQP_URLS").content_string.strip().split(",")
    if "WORKER_AMQP_CA_FILE" not in tls:
        assert all(u.startswith("amqp://") for u in urls)
        return
    assert all(u.startswith("amqps://") and u.split("@", 1)[1].split("/")[0].endswith(":5671") for u in urls)
    for var, path in tls.items():
        f = host.file(path)
        assert f.is_file and f.content_string.startswith("-----BEGIN "), var
        assert (f.user, f.group, f.mode) == ((NAME, NAME, 0o600) if var.endswith("_KEY") else ("root", NAME, 0o644))
    assert host.file(f"/etc/{NAME}/tls").mode == 0o750


def test_psql_as_the_worker_user_verifies_the_server(host) -> None:
    """psql service=<db> (the worker user's ~/.pg_service.conf) connects with verify-full against
    ~/.postgresql/root.crt, over TLS; trusting another CA instead, it is refused."""
    if "WORKER_DATABASE_CA_FILE" not in _tls_env(host):
        pytest.skip("the database is not reached over TLS on this host")
    url = urlsplit(host.file(f"/etc/{NAME}/env/WORKER_DATABASE_URL").content_string.strip())
    service = url.path.lstrip("/")
    assert "sslmode=verify-full" in host.file(f"/opt/{NAME}/.pg_service.conf").content_string
    assert host.file(f"/opt/{NAME}/.postgresql/root.crt").content_string.startswith("-----BEGIN CERTIFICATE")
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert host.check_output(f"runuser -u {NAME} -- psql -w service={service} -tAc '{query}'") == "t"
    # The same connection trusting the system's CAs only: the sandbox CA is not among them.
    system_cas = "/etc/ssl/certs/ca-certificates.crt"
    other = host.run(f"runuser -u {NAME} -- psql -w 'service={service} sslrootcert={system_cas}' -tAc 'SELECT 1'")
    assert other.rc != 0 and "certificate verify failed" in other.stderr, other.stderr
    # Plaintext is refused by the server (hostssl only).
    plain = host.run(f"runuser -u {NAME} -- psql -w 'service={service} sslmode=disable' -tAc 'SELECT 1'")
    assert plain.rc != 0 and "no encryption" in plain.stderr, plain.stderr
