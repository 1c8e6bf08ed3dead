#!/usr/bin/env python3
"""SSH jobs per second: the account worker's ssh action against Celery, and its concurrency.

One run, one broker, one database, one account host (the sandbox's sandbox-account, Debian 13,
sshd).  Each row gets a fresh durable quorum queue holding its jobs, published beforehand
(persistent, publisher confirms); then the consumer process is started and timed until all its
jobs are recorded in job_runs:

  (a) ssh         the account worker (python -m account_worker from worker/src) with
                  WORKER_ACTION=ssh and its defaults otherwise: WORKER_CONCURRENCY 16 with ssh,
                  WORKER_SSH_HOST_CONCURRENCY 4 (channels at once over the host's one connection,
                  kept open between jobs); each job runs the allow-listed `true`;
  (b) celery-ssh  `celery worker` with default settings (prefork, concurrency = CPUs) running
                  bench/celery_app.py's ssh_job, what a Celery user writes: a paramiko SSHClient
                  per task (pinned known_hosts, RejectPolicy), `true`, close: one handshake each;
  (c) sleep       the account worker with WORKER_ACTION=sleep_action:sleep_100ms (bench/sleep_action.py,
                  100 ms of sleep, nothing remote) and WORKER_CONCURRENCY=16 (--concurrency): the
                  concurrency bound is 16 actions at once, so at most 16 / 0.1 s = 160 jobs/s.

jobs/s = jobs / (time from spawning the consumer until the last job is recorded), start-up and
the first handshake included.  CPU s and peak RSS (VmHWM) are the consumer's own (Celery: main
process + pool children); sshd's CPU inside the container is not counted.
Goals: a >= 100 jobs/s; a >= 10 b; c >= 0.8 x (16 / 0.1 s) = 128 jobs/s.

Across a network (--rtt-ms, default 0,20): (a) and (b) run once more for each round-trip time above 0,
against a relay in this process that delays each direction by half of it (bench/delayed_link.py; this
machine's kernel has no `tc netem`).  The run's account for that round trip names the relay's address
as its host, and the copied known_hosts gains the relay's address with the same pinned key, so the
worker and Celery check the same sshd's key as without it.  Goals at 20 ms: a >= 100 jobs/s, a >= 10 b.
(a) keeps the worker's defaults; set WORKER_SSH_HOST_CONCURRENCY in the environment to try another bound.

The target: sandbox-account's sshd, published on 127.0.0.1:2222 (BENCH_SSH_HOST).  The run adds
one account, bench-<run>-account, whose host is that address (removed afterwards with the run's
queues and job_runs rows); the worker and the Celery task log in as account-jobs with the sandbox
workers' key (.sandbox/ssh/worker_ed25519) and check the host key against the pinned known_hosts
and allow-list that roles/worker deployed on sandbox-worker (copied from there with podman exec,
so the run tests what `make site` wrote: its known_hosts line names the host as
sandbox-account and as [127.0.0.1]:2222).

    make site   # once
    CONTAINERS_CONF=containers/containers.conf .venv/bin/python bench/ssh_throughput.py \\
        [--n 2000] [--celery-n 150] [--sleep-n 2000] [--repeat 3] [--png reports/ssh_throughput.png]

`make bench` runs it after bench/worker_throughput.py.  Shared modules: publishing.py,
processes.py, report.py, and the broker/database plumbing of worker_throughput.Bench.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from delayed_link import DelayedLink
from endpoints import SANDBOX
from processes import Phase
from publishing import job_messages
from report import GoalRow, Result, run_and_report
from support.containers import run_in
from worker_throughput import BENCH, ROOT, Bench

GOAL_A_RATE = 100.0
GOAL_A_VS_B = 10.0
GOAL_C_FRACTION = 0.8
SLEEP_SECONDS = 0.1  # bench/sleep_action.py

ROWS = {
    "ssh": "(a) account worker, ssh `true`",
    "celery-ssh": "(b) Celery, SSHClient per task",
    "sleep": "(c) account worker, 100 ms sleep",
}
NETWORK_ROWS = ("ssh", "celery-ssh")  # the rows that reach the account host, run at each --rtt-ms
WORKER_HOST = "sandbox-worker"  # holds the pinned known_hosts and the allow-list roles/worker wrote
WORKER_SSH_DIR = "/etc/account-worker/ssh"
SSH_USER = "account-jobs"
TRUE_JOB = {"command": "true"}


def row_key(base: str, rtt_ms: int) -> str:
    """The results' key of row `base` at a round-trip time: `ssh`, `ssh@20ms`."""
    return base if rtt_ms == 0 else f"{base}@{rtt_ms}ms"


def row_label(base: str, rtt_ms: int) -> str:
    return ROWS[base] if rtt_ms == 0 else f"{ROWS[base]} @{rtt_ms}ms"


def ssh_goals(results: dict[str, Result], concurrency: int, rtts_ms: Sequence[int] = (0,)) -> list[GoalRow]:
    """(name, value, goal, met) for the rows present; a failed row's rate is NaN and fails its goals."""
    rows: list[GoalRow] = []
    for rtt in rtts_ms:
        at = "" if rtt == 0 else f", RTT {rtt}ms"
        a, b = results.get(row_key("ssh", rtt)), results.get(row_key("celery-ssh", rtt))
        if a is not None:
            rows.append((f"a jobs/s{at}", a.rate, f">= {GOAL_A_RATE:g}", a.rate >= GOAL_A_RATE))
        if a is not None and b is not None:
            ratio = a.rate / b.rate
            rows.append((f"a/b{at}", ratio, f">= {GOAL_A_VS_B:g}", ratio >= GOAL_A_VS_B))
    c = results.get("sleep")
    if c is not None:
        goal = GOAL_C_FRACTION * concurrency / SLEEP_SECONDS
        rows.append((f"c jobs/s (bound {concurrency})", c.rate, f">= {goal:g}", c.rate >= goal))
    return rows


def known_hosts_name(address: str, port: int) -> str:
    """How known_hosts names a host: the address alone on port 22, `[address]:port` otherwise."""
    address = address.strip("[]")
    return address if port == 22 else f"[{address}]:{port}"


def alias_known_hosts(text: str, name: str, alias: str) -> str:
    """known_hosts `text` with a copy of each line pinning `name`'s key, naming `alias` instead."""
    added = []
    for line in text.splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and not line.startswith(("#", "@")) and name in fields[0].split(","):
            added.append(f"{alias} {fields[1]}")
    if not added:
        raise SystemExit(f"known_hosts pins no key for {name} (hashed names are not supported here)")
    return text.rstrip("\n") + "\n" + "\n".join(added) + "\n"


def split_host(host: str) -> tuple[str, int]:
    """`address:port` of BENCH_SSH_HOST; the address must be loopback (all traffic stays local)."""
    address, _, port = host.rpartition(":")
    try:
        loopback = ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        loopback = address == "localhost"
    if not loopback or not port.isdigit():
        raise SystemExit(f"BENCH_SSH_HOST must be a loopback address:port, got {host!r}")
    return address, int(port)


class SshBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.host = os.environ.get("BENCH_SSH_HOST") or "127.0.0.1:2222"
        address, port = split_host(self.host)
        self.key_file = os.environ.get("BENCH_SSH_KEY_FILE") or str(SANDBOX / "ssh" / "worker_ed25519")
        self.known_hosts = self.logdir / "known_hosts"
        self.commands = self.logdir / "commands.json"
        for path in (self.known_hosts, self.commands):
            path.write_text(run_in(WORKER_HOST, "cat", f"{WORKER_SSH_DIR}/{path.name}").stdout, encoding="utf-8")
        # One account per round-trip time: its host is the sshd itself (0 ms) or a relay delaying the way to it.
        self.links = {rtt: DelayedLink((address.strip("[]"), port), rtt / 1000) for rtt in args.rtt_ms if rtt}
        self.accounts = {0: f"{self.run_id}-account"}
        hosts = {0: self.host}
        pinned = self.known_hosts.read_text(encoding="utf-8")
        for rtt, link in self.links.items():
            link.start()
            self.accounts[rtt], hosts[rtt] = f"{self.run_id}-account-{rtt}ms", link.address
            pinned = alias_known_hosts(
                pinned, known_hosts_name(address, port), known_hosts_name(link.listen, link.port)
            )
        self.known_hosts.write_text(pinned, encoding="utf-8")
        for rtt, account in self.accounts.items():
            self.db.execute("INSERT INTO accounts (account_uuid, host) VALUES (%s, %s)", (account, hosts[rtt]))

    def phase_ssh(self, rep: int, n: int, rtt: int = 0) -> Phase:
        env = {
            "WORKER_ACTION": "ssh",
            "WORKER_SSH_USER": SSH_USER,
            "WORKER_SSH_KEY_FILE": self.key_file,
            "WORKER_SSH_KNOWN_HOSTS": str(self.known_hosts),
            "WORKER_SSH_COMMANDS": str(self.commands),
        }
        account = self.accounts[rtt]
        return self.phase_worker(
            rep,
            n,
            row_key("ssh", rtt),
            label=row_label("ssh", rtt),
            extra_env=env,
            messages=lambda prefix, count: job_messages(prefix, count, (account,), TRUE_JOB),
        )

    def phase_celery_ssh(self, rep: int, n: int, rtt: int = 0) -> Phase:
        env = {
            "BENCH_SSH_USER": SSH_USER,
            "BENCH_SSH_KEY_FILE": self.key_file,
            "BENCH_SSH_KNOWN_HOSTS": str(self.known_hosts),
        }
        return self.phase_celery(
            rep,
            n,
            row_key("celery-ssh", rtt),
            label=row_label("celery-ssh", rtt),
            publish_args=("ssh", self.accounts[rtt]),
            extra_env=env,
        )

    def phase_sleep(self, rep: int, n: int) -> Phase:
        env = {
            "PYTHONPATH": os.pathsep.join((str(ROOT / "worker" / "src"), str(BENCH))),
            "WORKER_ACTION": "sleep_action:sleep_100ms",
            "WORKER_CONCURRENCY": str(self.args.concurrency),
        }
        label = f"{ROWS['sleep']}, c={self.args.concurrency}"
        account = self.accounts[0]
        return self.phase_worker(
            rep,
            n,
            "sleep",
            label=label,
            extra_env=env,
            messages=lambda prefix, count: job_messages(prefix, count, (account,)),
        )

    unit = "jobs"

    def phase_builders(self) -> dict[str, tuple[Callable[[int, int], Phase], int]]:
        builders: dict[str, tuple[Callable[[int, int], Phase], int]] = {"sleep": (self.phase_sleep, self.args.sleep_n)}
        for rtt in self.args.rtt_ms:
            builders[row_key("ssh", rtt)] = (functools.partial(self.phase_ssh, rtt=rtt), self.args.n)
            builders[row_key("celery-ssh", rtt)] = (
                functools.partial(self.phase_celery_ssh, rtt=rtt),
                self.args.celery_n,
            )
        return builders

    def cleanup(self) -> None:
        try:
            for link in self.links.values():
                link.close()
            self.db.execute("DELETE FROM accounts WHERE account_uuid = ANY(%s)", (list(self.accounts.values()),))
        finally:
            super().cleanup()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs for (a) (default 2000)")
    parser.add_argument("--celery-n", type=int, default=150, help="jobs for (b) (default 150)")
    parser.add_argument("--sleep-n", type=int, default=2000, help="jobs for (c) (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="WORKER_CONCURRENCY of (c) (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the medians are reported (default 3)")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated subset of ssh,celery-ssh,sleep")
    parser.add_argument(
        "--rtt-ms",
        default="0,20",
        help="round-trip times (ms) at which ssh and celery-ssh run; 0 = straight to sshd (default 0,20)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per row, seconds (default 120)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after publishing, seconds (default 1)")
    parser.add_argument("--png", type=Path, default=ROOT / "reports" / "ssh_throughput.png")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    chosen = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(chosen) - set(ROWS)
    if unknown or min(args.n, args.celery_n, args.sleep_n, args.repeat, args.concurrency) < 1:
        parser.error(f"bad --only {sorted(unknown)} / counts / --repeat / --concurrency")
    try:
        args.rtt_ms = sorted({int(v) for v in args.rtt_ms.split(",") if v.strip()})
    except ValueError:
        parser.error(f"--rtt-ms takes whole milliseconds, got {args.rtt_ms!r}")
    if not args.rtt_ms or args.rtt_ms[0] < 0 or args.rtt_ms[-1] > 1000:
        parser.error("--rtt-ms: between 0 and 1000")
    # The rows in run order: the network rows at each round-trip time, then the rest.
    args.only = [row_key(k, rtt) for rtt in args.rtt_ms for k in NETWORK_ROWS if k in chosen]
    args.only += [k for k in chosen if k not in NETWORK_ROWS]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = SshBench(args)
    started = time.monotonic()
    print(
        f"run {bench.run_id}: N={args.n}, Celery N={args.celery_n}, sleep N={args.sleep_n}, repeat={args.repeat}, "
        f"RTT {args.rtt_ms} ms, target {bench.host}, logs in {bench.logdir}",
        file=sys.stderr,
    )
    return run_and_report(
        bench,
        args,
        started,
        subtitle=f"N={args.n}/{args.celery_n}/{args.sleep_n}",
        median_note=" (messages = jobs, msgs/s = jobs/s)",
        goal_rows=lambda final: ssh_goals(final, args.concurrency, args.rtt_ms),
        footer="; target sshd on sandbox-account, RTT > 0 through a delaying relay",
        plot_options={
            "title": "SSH jobs: account worker vs Celery",
            "highlight": tuple(k for k in args.only if k == "sleep" or k.split("@")[0] == "ssh"),
            "rss_goal": None,
            "unit": "jobs",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
