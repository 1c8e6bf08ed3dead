"""Processes of bench/worker_throughput.py: start one consumer, time it until its last message is
done, sample its peak memory and CPU, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from publishing import message_id
from report import Result
from support.db import count_rows, has_prefix, has_row

POLL = 0.025  # seconds between "done?" checks
RSS_EVERY = 4  # sample memory every RSS_EVERY polls (and once at the end)


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


class PeakRss:
    """Max VmHWM per process of a tree (main + its direct children), summed."""

    def __init__(self, pid: int, with_children: bool) -> None:
        self.pid = pid
        self.with_children = with_children
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        pids = [self.pid, *(_children(self.pid) if self.with_children else [])]
        for pid in pids:
            kb = _vmhwm_kb(pid)
            if kb > self.peaks.get(pid, 0):
                self.peaks[pid] = kb

    @property
    def mb(self) -> float:
        return sum(self.peaks.values()) / 1024.0


def cpu_seconds(pid: int, with_children: bool) -> float:
    """user + system CPU of the process (and its live direct children)."""
    return sum(_process_cpu(p) for p in [pid, *(_children(pid) if with_children else [])])


def _stat_ticks(path: str) -> int:
    """utime + stime (fields 14 and 15) of a /proc stat file, in clock ticks."""
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _process_cpu(pid: int) -> float:
    """One process's CPU seconds.  /proc/<pid>/stat counts in clock ticks (10 ms: raw pika's run is
    18 or 19 of them), so each live thread's nanoseconds on a CPU (/proc/<pid>/task/<tid>/schedstat)
    are summed instead; the ticks the process has beyond its live threads' are threads that ended."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        whole = _stat_ticks(f"/proc/{pid}/stat")
        tids = os.listdir(f"/proc/{pid}/task")
    except (OSError, ValueError, IndexError):
        return 0.0
    live_ticks = live_ns = 0
    for tid in tids:
        try:
            ticks = _stat_ticks(f"/proc/{pid}/task/{tid}/stat")
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile: its time is in the remainder
        live_ticks += ticks
        live_ns += ns
    return live_ns / 1e9 + max(0, whole - live_ticks) / tick


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL its own process group (started with start_new_session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@dataclass
class Phase:
    """One consumer to measure: its queue (filled by prepare), command, and how it reports done."""

    key: str
    label: str
    messages: int
    queue: str
    prefix: str
    command: list[str]
    env: dict[str, str]
    done_by: str  # "stdout" (it prints `first <t>` / `done <t>`) or "db" (rows in job_runs)
    children: bool = False
    prepare: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    extra: dict[str, object] = field(default_factory=dict)


def measure(phase: Phase, db: psycopg.Connection, logdir: Path, timeout: float, cwd: Path) -> Result:
    """Start the consumer, poll until its last message is done (or it exits, or the timeout), stop it."""
    result = Result(phase.key, phase.label, phase.messages)
    log_path = logdir / f"{phase.key}.log"
    marks: dict[str, float] = {}

    with open(log_path, "wb") as log:
        start = time.monotonic()
        proc = subprocess.Popen(
            phase.command,
            env=phase.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if phase.done_by == "stdout" else log,
            stderr=log,
            start_new_session=True,
        )
        reader = None
        if phase.done_by == "stdout":

            def read() -> None:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    word, _, value = raw.decode(errors="replace").strip().partition(" ")
                    if word in ("first", "done"):
                        marks[word] = float(value)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
        rss = PeakRss(proc.pid, phase.children)
        deadline = start + timeout
        polls = 0
        # done_by "db": the rows are counted only once the message published last is recorded (a
        # count is a scan of every row of the run, each poll, on the database being measured).
        last_id = message_id(phase.prefix, phase.messages - 1)
        tail = False
        try:
            while True:
                now = time.monotonic()
                if phase.done_by == "db":
                    if "first" not in marks and has_prefix(db, phase.prefix):
                        marks["first"] = time.monotonic()
                    if "first" in marks and (tail or has_row(db, last_id)):
                        tail = True  # from here on the rows are counted on every poll
                        result.done = count_rows(db, phase.prefix)
                        if result.done >= phase.messages:
                            marks["done"] = time.monotonic()
                    now = time.monotonic()
                elif "done" in marks:
                    result.done = phase.messages
                if polls % RSS_EVERY == 0:
                    rss.sample()
                polls += 1
                if "done" in marks:
                    break
                exited = proc.poll() is not None
                if exited or now > deadline:
                    if phase.done_by == "db":
                        result.done = count_rows(db, phase.prefix)
                    result.note = (
                        f"exited early (rc {proc.returncode}), see {log_path}"
                        if exited
                        else f"timeout after {timeout:.0f}s ({result.done}/{phase.messages} done)"
                    )
                    break
                time.sleep(POLL)
            rss.sample()
            result.cpu = cpu_seconds(proc.pid, phase.children)
        finally:
            rc = stop_process(proc)
            if reader is not None:
                reader.join(2)
    if "done" in marks:
        result.seconds = marks["done"] - start
    if "first" in marks:
        result.startup = marks["first"] - start
    result.rss_mb = rss.mb
    if rc not in (0, None) and not result.note and not phase.key.startswith("celery"):
        result.note = f"exit code {rc}"
    return result
