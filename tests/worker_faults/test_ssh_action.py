"""The ssh action, live: the deployed workers run allow-listed commands on the account host over SSH.

Through the real broker, database, workers and the account host's sshd (role account_host):
output lands in job_runs and the reply, shell metacharacters stay text on the target, a
wrong pinned host key, a non-zero exit, an unknown command and an unreachable host end as
the worker's README says, a stopped sshd delays a job without losing it, and one
connection per worker process serves many jobs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest

from deployment import Env
from support.containers import pids, run_in, start_service, stop_service
from support.db import recorded, wait_recorded
from support.jobs import EXCHANGE, ROUTING_KEY, JobPublisher, drain_dead_letters, job_properties

WORKER_PROCESS = "bin/account-worker"
KNOWN_HOSTS = "/etc/{name}/ssh/known_hosts"
# Not any host's key: a key pair made for nothing but this pin.
WRONG_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEy5Ufx4c1+XZ5nA1n3T0Tq4yRZ5m7cS3rBq4o7b2Xc1"


def run_id() -> str:
    return f"it-ssh-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="module")
def target(env: Env) -> tuple[str, str]:
    """(account_uuid, account host) of a seeded account on the account host."""
    if not env.account_hosts:
        pytest.fail("IT_ACCOUNT_HOSTS is not set: the scenario has no account host", pytrace=False)
    for account_uuid, host in sorted(env.accounts.items()):
        if host in env.account_hosts:
            return account_uuid, host
    pytest.fail(f"no seeded account points at {env.account_hosts}", pytrace=False)


def publish(publisher: JobPublisher, message_id: str, account_uuid: str, payload: Mapping[str, Any], **extra) -> None:
    body = json.dumps({"apikey": publisher.apikey, "account_uuid": account_uuid, "payload": payload}).encode()
    publisher.ch.basic_publish(EXCHANGE, ROUTING_KEY, body, job_properties(message_id, **extra), mandatory=True)


def run_row(env: Env, message_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(env.database_url, connect_timeout=5) as db:
        return db.execute(
            "SELECT host, status, exit_status, stdout, stderr, attempts FROM job_runs WHERE message_id = %s",
            (message_id,),
        ).fetchone()


def wait_dead(env: Env, prefix: str, count: int, deadline_s: float) -> dict[str, str]:
    """message_id -> x-worker-reason of the dead letters of this run, once `count` arrived (or the deadline)."""
    deadline = time.monotonic() + deadline_s
    dead: dict[str, str] = {}
    while len(dead) < count and time.monotonic() < deadline:
        dead.update(
            {mid: headers.get("x-worker-reason", "") for mid, headers in drain_dead_letters(env.amqp_url, prefix)}
        )
        time.sleep(0.5)
    return dead


def wait_reply(publisher: JobPublisher, queue: str, deadline_s: float = 60) -> dict[str, Any] | None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        method, _, body = publisher.ch.basic_get(queue, auto_ack=True)
        if method:
            return json.loads(body)
        publisher.conn.sleep(0.2)
    return None


def accepted_logins(env: Env, host: str) -> int:
    """Public-key logins of the workers' user that sshd logged on host (each one a new SSH handshake)."""
    out = run_in(host, "journalctl", "-u", "ssh.service", "-o", "cat", "--no-pager").stdout
    return sum(f"Accepted publickey for {env.ssh_user} " in line for line in out.splitlines())


def worker_processes(env: Env) -> int:
    return sum(len(pids(host, WORKER_PROCESS)) for host in env.worker_hosts)


def restart_workers(env: Env) -> None:
    for host in env.worker_hosts:
        run_in(host, "sh", "-c", f"sv restart /etc/service/{env.worker_name}-*")


def test_a_job_runs_on_the_accounts_host_and_its_output_is_recorded_and_replied(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, host = target
    expected = run_in(host, "hostname").stdout.strip()
    assert expected not in {run_in(w, "hostname").stdout.strip() for w in env.worker_hosts}
    prefix = run_id()
    reply_queue = publisher.ch.queue_declare("", exclusive=True).method.queue
    publish(publisher, f"{prefix}hostname", account_uuid, {"command": "hostname"}, reply_to=reply_queue)
    publish(publisher, f"{prefix}uptime", account_uuid, {"command": "uptime"})
    reply = wait_reply(publisher, reply_queue)
    assert reply is not None, "no reply within 60 s"
    assert reply["exit_status"] == 0 and reply["stdout"] == expected + "\n" and reply["host"] == host
    assert wait_recorded(env.database_url, prefix, 2, deadline_s=60).distinct == 2
    assert run_row(env, f"{prefix}hostname")[:4] == (host, "done", 0, expected + "\n")
    _, status, exit_status, stdout, _, _ = run_row(env, f"{prefix}uptime")
    assert (status, exit_status) == ("done", 0) and "load average" in stdout


HOSTILE = {
    "semicolon": "x; touch /tmp/{p}semicolon",
    "dollar": "$(touch /tmp/{p}dollar)",
    "backticks": "`touch /tmp/{p}backticks`",
    "quotes": "x' ; touch /tmp/{p}quotes ; echo '",
    "and": "x && touch /tmp/{p}and",
    "pipe": "x | tee /tmp/{p}pipe",
    "redirect": "x > /tmp/{p}redirect",
}


def test_shell_metacharacters_in_a_parameter_never_execute_on_the_target(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, host = target
    prefix = run_id()
    marker = prefix.replace("-", "")
    # Control: the workers' user can create exactly these files, so their absence below means something.
    control = f"/tmp/{marker}control"
    run_in(host, "su", "-s", "/bin/sh", env.ssh_user, "-c", f"touch {control}")
    assert run_in(host, "test", "-e", control, check=False).returncode == 0
    run_in(host, "rm", "-f", control)

    texts = {name: text.format(p=marker) for name, text in HOSTILE.items()}
    for name, text in texts.items():
        publish(publisher, f"{prefix}{name}", account_uuid, {"command": "echo", "params": {"text": text}})
    assert wait_recorded(env.database_url, prefix, len(texts), deadline_s=60).distinct == len(texts)
    for name, text in texts.items():
        row = run_row(env, f"{prefix}{name}")
        assert row[1:4] == ("done", 0, text + "\n"), f"{name}: the text did not come back verbatim"
    created = run_in(host, "sh", "-c", f"ls /tmp | grep -c '^{marker}' || true").stdout.strip()
    assert created == "0", f"a metacharacter executed on {host}: {created} file(s) /tmp/{marker}*"
    env.results.append(
        {"test": "ssh metacharacters", "sent": len(texts), "recorded": len(texts), "duplicates": 0, "dead_lettered": 0}
    )


def test_forbidden_commands_and_bad_parameters_are_dead_lettered_as_invalid(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, _ = target
    prefix = run_id()
    bad = {
        "unknown": {"command": "reboot"},
        "pattern": {"command": "sleep", "params": {"seconds": "1; id"}},
        "range": {"command": "sleep", "params": {"seconds": 3600}},
        "extra": {"command": "uptime", "params": {"x": "y"}},
        "nocommand": {"comand": "uptime"},
    }
    for name, payload in bad.items():
        publish(publisher, f"{prefix}{name}", account_uuid, payload)
    dead = wait_dead(env, prefix, len(bad), deadline_s=60)
    assert set(dead) == {f"{prefix}{name}" for name in bad}
    assert all(reason.startswith("invalid message: ") for reason in dead.values()), dead
    assert "not allow-listed" in dead[f"{prefix}unknown"]
    assert recorded(env.database_url, prefix).rows == 0


def test_a_non_zero_exit_is_dead_lettered_with_its_status_and_a_listed_one_retried_first(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, _ = target
    prefix = run_id()
    publish(publisher, f"{prefix}exit3", account_uuid, {"command": "exit", "params": {"code": 3}})
    publish(publisher, f"{prefix}exit75", account_uuid, {"command": "exit", "params": {"code": 75}})
    dead = wait_dead(env, prefix, 2, deadline_s=180)
    assert "exited with status 3: exiting 3" in dead[f"{prefix}exit3"]
    assert not dead[f"{prefix}exit3"].startswith("retries exhausted")
    assert dead[f"{prefix}exit75"].startswith("retries exhausted: ")
    assert "exited with status 75" in dead[f"{prefix}exit75"]


@pytest.fixture
def wrong_pinned_key(env: Env) -> Iterator[None]:
    """Every worker host pins a wrong key for the account host (then the right one again)."""
    path = KNOWN_HOSTS.format(name=env.worker_name)
    for host in env.worker_hosts:
        run_in(host, "cp", "-p", path, f"{path}.it")
        run_in(host, "sed", "-i", f"s#ssh-ed25519 [A-Za-z0-9+/=]*#{WRONG_KEY}#", path)
    restart_workers(env)
    try:
        yield
    finally:
        for host in env.worker_hosts:
            run_in(host, "mv", f"{path}.it", path)
        restart_workers(env)


def test_a_host_key_that_differs_from_the_pinned_one_is_dead_lettered(
    env: Env, publisher: JobPublisher, target: tuple[str, str], wrong_pinned_key: None
) -> None:
    account_uuid, host = target
    prefix = run_id()
    publish(publisher, f"{prefix}hostkey", account_uuid, {"command": "hostname"})
    dead = wait_dead(env, prefix, 1, deadline_s=60)
    assert f"host key mismatch for {host}" in dead.get(f"{prefix}hostkey", ""), dead
    assert recorded(env.database_url, prefix).rows == 0


def test_an_unreachable_host_is_retried_then_dead_lettered(env: Env, publisher: JobPublisher) -> None:
    prefix = run_id()
    account_uuid = f"{prefix}nowhere"
    with psycopg.connect(env.database_url, autocommit=True) as db:
        db.execute("INSERT INTO accounts (account_uuid, host) VALUES (%s, 'nowhere.invalid')", (account_uuid,))
    try:
        publish(publisher, f"{prefix}job", account_uuid, {"command": "uptime"})
        dead = wait_dead(env, prefix, 1, deadline_s=180)
    finally:
        with psycopg.connect(env.database_url, autocommit=True) as db:
            db.execute("DELETE FROM accounts WHERE account_uuid = %s", (account_uuid,))
    reason = dead.get(f"{prefix}job", "")
    assert reason.startswith("retries exhausted: ") and "nowhere.invalid cannot be resolved" in reason, dead


def _logged_retry(env: Env, message_id: str) -> bool:
    for host in env.worker_hosts:
        out = run_in(host, "sh", "-c", f"cat /var/log/{env.worker_name}-*/current", check=False).stdout
        if any(message_id in line and "decision=retry" in line for line in out.splitlines()):
            return True
    return False


def test_a_stopped_sshd_delays_the_job_which_runs_once_sshd_is_back(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, host = target
    prefix = run_id()
    message_id = f"{prefix}back"
    stop_service(host, "ssh")
    try:
        # The workers' open connections too (their session processes run as the user).
        run_in(host, "pkill", "-TERM", "-u", env.ssh_user, check=False)
        publish(publisher, message_id, account_uuid, {"command": "hostname"})
        deadline = time.monotonic() + 60
        while not _logged_retry(env, message_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _logged_retry(env, message_id), "no retry logged while sshd was down"
    finally:
        start_service(host, "ssh")
    assert wait_recorded(env.database_url, prefix, 1, deadline_s=120).distinct == 1
    row = run_row(env, message_id)
    assert row[1:3] == ("done", 0) and row[5] >= 2, f"recorded without a retry: {row}"


def test_jobs_to_one_host_share_one_connection_per_worker_process(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, host = target
    jobs = 100
    before = accepted_logins(env, host)
    prefix = run_id()
    for n in range(jobs):
        publish(publisher, f"{prefix}{n:04d}", account_uuid, {"command": "uptime"})
    assert wait_recorded(env.database_url, prefix, jobs, deadline_s=120).distinct == jobs
    handshakes = accepted_logins(env, host) - before
    processes = worker_processes(env)
    env.results.append(
        {
            "test": "ssh connection reuse",
            "sent": jobs,
            "recorded": jobs,
            "duplicates": 0,
            "dead_lettered": 0,
            "handshakes": handshakes,
            "worker_processes": processes,
        }
    )
    assert 1 <= handshakes <= processes, f"{handshakes} SSH handshakes for {jobs} jobs and {processes} workers"


def test_jobs_run_concurrently_within_the_per_host_bound(
    env: Env, publisher: JobPublisher, target: tuple[str, str]
) -> None:
    account_uuid, host = target
    jobs, per_host_bound = 16, 4  # WORKER_SSH_HOST_CONCURRENCY's default, per worker process
    prefix = run_id()
    for n in range(jobs):
        publish(publisher, f"{prefix}{n:04d}", account_uuid, {"command": "sleep", "params": {"seconds": 2}})
    most = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = run_in(host, "pgrep", "-c", "-u", env.ssh_user, "-x", "sleep", check=False).stdout.strip()
        most = max(most, int(running or 0))
        if recorded(env.database_url, prefix).distinct == jobs:
            break
        time.sleep(0.2)
    assert wait_recorded(env.database_url, prefix, jobs, deadline_s=5).distinct == jobs
    processes = worker_processes(env)
    env.results.append(
        {"test": "ssh concurrency", "sent": jobs, "recorded": jobs, "duplicates": 0, "dead_lettered": 0, "most": most}
    )
    assert 2 <= most <= per_host_bound * processes, f"at most {most} commands ran at once"
