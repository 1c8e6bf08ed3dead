"""The ssh action, live: the deployed workers run allow-listed commands on the account host over SSH.

Through the real broker, database, workers and the account host's sshd (role account_host):
output lands in job_runs and the reply, shell metacharacters stay text on the target, a
wrong pinned host key, a non-zero exit, an unknown command and an unreachable host end as
the worker's README says, a stopped sshd delays a job without losing it, and one
connection per worker process serves many jobs; a slow host holds back no other host's
jobs, and `sv restart` / `kill -9` during a stream of SSH jobs lose nothing.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest

from deployment import Env
from streams import FAULTS, stream_with_fault, sv_restart, worker_pids
from support.containers import run_in, start_service, stop_service
from support.db import recorded, wait_recorded
from support.jobs import EXCHANGE, ROUTING_KEY, JobPublisher, drain_dead_letters, job_properties

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
    return sum(len(worker_pids(host)) for host in env.worker_hosts)


def restart_workers(env: Env) -> None:
    for host in env.worker_hosts:
        sv_restart(env, host)


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
    # The control of the option-injection case below: a dash inside the text is text.
    "dash": "x -n",
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
        # CWE-88: quoted, but still an option to echo (it would print nothing); the allow-list does not permit it.
        "option": {"command": "echo", "params": {"text": "-n"}},
    }
    for name, payload in bad.items():
        publish(publisher, f"{prefix}{name}", account_uuid, payload)
    dead = wait_dead(env, prefix, len(bad), deadline_s=60)
    assert set(dead) == {f"{prefix}{name}" for name in bad}
    assert all(reason.startswith("invalid message: ") for reason in dead.values()), dead
    assert "not allow-listed" in dead[f"{prefix}unknown"]
    assert "begins with '-' and would be read as an option" in dead[f"{prefix}option"]
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


SSH_STREAM = 300
SLOW_SECONDS = 30  # the longest sleep the scenario's allow-list accepts
QUICK_JOBS = 40


def publish_uptime(publisher: JobPublisher, message_id: str, account_uuid: str) -> None:
    publish(publisher, message_id, account_uuid, {"command": "uptime"})


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_worker_fault_during_a_stream_of_ssh_jobs_records_each_exactly_once(
    env: Env, publisher: JobPublisher, target: tuple[str, str], fault: str
) -> None:
    assert set(env.accounts.values()) <= set(env.account_hosts), "the stream's accounts must be on account hosts"
    stream_with_fault(env, publisher, run_id(), fault, count=SSH_STREAM, publish=publish_uptime)


def services(env: Env, host: str) -> list[str]:
    return run_in(host, "sh", "-c", f"ls -d /etc/service/{env.worker_name}-*").stdout.split()


def consumers(publisher: JobPublisher) -> int:
    return publisher.ch.queue_declare("jobs", passive=True).method.consumer_count


@pytest.fixture
def one_instance(env: Env, publisher: JobPublisher) -> Iterator[None]:
    """Every worker instance but one stopped: the slow job and the quick ones meet in the same process."""
    keep = (env.worker_hosts[0], services(env, env.worker_hosts[0])[0])
    stopped = [(host, service) for host in env.worker_hosts for service in services(env, host)]
    stopped.remove(keep)
    try:
        for host, service in stopped:
            run_in(host, "sv", "-w", "15", "stop", service)
        deadline = time.monotonic() + 30
        while consumers(publisher) != 1 and time.monotonic() < deadline:
            publisher.conn.sleep(0.5)
        assert consumers(publisher) == 1
        yield
    finally:
        for host, service in stopped:
            run_in(host, "sv", "start", service, check=False)


@pytest.fixture
def other_host_name(env: Env, target: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """(account_uuid, host) of an account on the same sshd under another host name: its IP address.

    The per-host bound and the pooled connection are per host name, so for the worker this is
    another host.  Every worker host pins the account host's key under that address too.
    """
    _, host = target
    address = run_in(env.worker_hosts[0], "getent", "hosts", host).stdout.split()[0]
    path = KNOWN_HOSTS.format(name=env.worker_name)
    for worker in env.worker_hosts:
        run_in(worker, "cp", "-p", path, f"{path}.it")
        pinned = [line.split() for line in run_in(worker, "cat", path).stdout.splitlines()]
        keys = [f"{address} {fields[1]} {fields[2]}" for fields in pinned if host in fields[0].split(",")]
        assert keys, f"{host} is not pinned on {worker}"
        run_in(worker, "sh", "-c", f"printf '%s\\n' '{keys[0]}' >> {path}")
    account_uuid = f"{run_id()}by-address"
    with psycopg.connect(env.database_url, autocommit=True) as db:
        db.execute("INSERT INTO accounts (account_uuid, host) VALUES (%s, %s)", (account_uuid, address))
    try:
        yield account_uuid, address
    finally:
        with psycopg.connect(env.database_url, autocommit=True) as db:
            db.execute("DELETE FROM accounts WHERE account_uuid = %s", (account_uuid,))
        for worker in env.worker_hosts:
            run_in(worker, "mv", f"{path}.it", path)


def slow_running(env: Env, host: str) -> bool:
    command = f"sleep {SLOW_SECONDS}"
    return run_in(host, "pgrep", "-u", env.ssh_user, "-x", "-f", command, check=False).returncode == 0


def jobs_queue(env: Env) -> tuple[int, int]:
    """(ready, unacknowledged) messages of the jobs queue, as the broker counts them."""
    if not env.broker_host:
        pytest.fail("IT_BROKER_HOST is not set", pytrace=False)
    vhost = urllib.parse.unquote(urllib.parse.urlparse(env.amqp_url).path.lstrip("/")) or "/"
    out = run_in(
        env.broker_host,
        "rabbitmqctl",
        "-q",
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--no-table-headers",
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "jobs":
            return int(fields[1]), int(fields[2])
    pytest.fail(f"no jobs queue in {out!r}", pytrace=False)


def test_a_slow_host_does_not_hold_back_the_jobs_of_another_host(
    env: Env,
    publisher: JobPublisher,
    target: tuple[str, str],
    other_host_name: tuple[str, str],
    one_instance: None,
) -> None:
    account_uuid, host = target
    other_uuid, address = other_host_name
    prefix = run_id()
    publish(publisher, f"{prefix}slow", account_uuid, {"command": "sleep", "params": {"seconds": SLOW_SECONDS}})
    deadline = time.monotonic() + 60
    while not slow_running(env, host) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slow_running(env, host), "the slow command did not start on the target"
    for n in range(QUICK_JOBS):
        publish_uptime(publisher, f"{prefix}quick{n:03d}", other_uuid)

    # Ordering, not timing: the quick jobs are recorded and acked while the slow command still runs.
    done = 0
    queue = (-1, -1)
    while slow_running(env, host):
        done = recorded(env.database_url, f"{prefix}quick").distinct
        queue = jobs_queue(env)
        if done == QUICK_JOBS and queue == (0, 1):
            break
        time.sleep(0.3)
    still_running = slow_running(env, host)
    slow_rows = recorded(env.database_url, f"{prefix}slow").rows
    env.results.append(
        {
            "test": "slow host, other host",
            "sent": QUICK_JOBS + 1,
            "recorded": done,
            "duplicates": 0,
            "dead_lettered": 0,
            "quick_done_while_slow_ran": done,
            "queue_ready_unacked": f"{queue[0]}/{queue[1]}",
        }
    )
    assert still_running and slow_rows == 0, "the slow command ended before the quick jobs were all settled"
    assert done == QUICK_JOBS and queue == (0, 1), f"{done} quick jobs recorded, queue ready/unacked {queue}"

    final = wait_recorded(env.database_url, prefix, QUICK_JOBS + 1, deadline_s=120)
    assert (final.distinct, final.rows) == (QUICK_JOBS + 1, QUICK_JOBS + 1)
    assert run_row(env, f"{prefix}slow")[:3] == (host, "done", 0)
    assert run_row(env, f"{prefix}quick000")[:3] == (address, "done", 0)
    assert drain_dead_letters(env.amqp_url, prefix) == []
