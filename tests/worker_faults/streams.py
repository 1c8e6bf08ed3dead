"""Job streams with a worker fault injected part-way, shared by the record-only and the ssh-action tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from deployment import Env
from support.containers import kill_processes, pids, run_in
from support.db import wait_recorded
from support.jobs import JobPublisher, drain_dead_letters

WORKER_PROCESS = "bin/account-worker"

# publish(publisher, message_id, account_uuid): one job of the stream
Publish = Callable[[JobPublisher, str, str], None]


def record_only(publisher: JobPublisher, message_id: str, account_uuid: str) -> None:
    publisher.job(message_id, account_uuid)


def accounts(env: Env) -> itertools.cycle:
    return itertools.cycle(sorted(env.accounts))


def stream(
    env: Env,
    publisher: JobPublisher,
    prefix: str,
    count: int,
    *,
    fault_at: int,
    fault: Callable[[], None],
    publish: Publish = record_only,
) -> None:
    """Publish `count` confirmed jobs over the seeded accounts, calling fault() before job number fault_at."""
    cycle = accounts(env)
    for n in range(count):
        if n == fault_at:
            fault()
        publish(publisher, f"{prefix}{n:05d}", next(cycle))


def report(env: Env, name: str, prefix: str, sent: int) -> tuple[int, int, int]:
    """(distinct message_ids recorded, rows, dead letters) of a stream, once all arrived or 180 s passed."""
    distinct, rows = wait_recorded(env.database_url, prefix, sent, deadline_s=180)
    dead = drain_dead_letters(env.amqp_url, prefix)
    row = {"test": name, "sent": sent, "recorded": distinct, "duplicates": rows - distinct, "dead_lettered": len(dead)}
    if dead:  # why, so that a failure says it
        row["reasons"] = sorted({str(headers.get("x-worker-reason", "?"))[:160] for _, headers in dead})
    env.results.append(row)
    return distinct, rows, len(dead)


def worker_pids(host: str) -> set[str]:
    return pids(host, WORKER_PROCESS)


def sv_restart(env: Env, host: str) -> None:
    run_in(host, "sh", "-c", f"sv restart /etc/service/{env.worker_name}-*")


def kill_9(env: Env, host: str) -> None:
    kill_processes(host, WORKER_PROCESS, "KILL")


# name: (which worker host, the fault injected part-way through a stream)
FAULTS: dict[str, tuple[int, Callable[[Env, str], None]]] = {
    "sv restart mid-stream": (0, sv_restart),
    "kill -9 mid-stream": (-1, kill_9),
}


def stream_with_fault(
    env: Env, publisher: JobPublisher, prefix: str, fault: str, *, count: int, publish: Publish = record_only
) -> None:
    """A stream with FAULTS[fault] injected a third of the way; asserts every job recorded once, new workers."""
    which, inject = FAULTS[fault]
    host = env.worker_hosts[which]
    before = worker_pids(host)
    stream(env, publisher, prefix, count, fault_at=count // 3, fault=lambda: inject(env, host), publish=publish)
    name = fault if publish is record_only else f"{fault} (ssh)"
    distinct, rows, dead = report(env, name, prefix, count)
    assert (distinct, rows, dead) == (count, count, 0)
    after = worker_pids(host)
    assert before and after and not before & after, f"{fault}: runit did not start new workers on {host}"
