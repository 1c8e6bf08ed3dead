"""Stamps one job's way through the worker's threads; imported by bench/latency_trace.py into a worker it starts.

Wraps the worker's own functions at the hand-offs between its threads (names below: an AttributeError
here means the worker changed and this list must follow) and records (stage, message id, time) with
time.perf_counter(), which is CLOCK_MONOTONIC on Linux and so comparable with the publishing process's
clock.  At exit the stamps go, as JSON, to the file named by TRACE_STAMPS.  Diagnostics only: never
imported by the worker itself.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from account_worker import amqp, inflight, io_thread, session

STAMPS: list[tuple[str, str, float]] = []

# In the order a record-only job passes them with WORKER_CONCURRENCY > 1 (the ssh action's default).
STAGES = (
    "io_received",  # the I/O thread has the delivery (IOThread._on_delivery)
    "job_taken",  # the job thread took it (Recorder.take)
    "action_submitted",  # its database part done, its action handed to the pool (InFlight.submit)
    "action_started",  # a pool thread runs the action (run_one)
    "action_ended",
    "finished_queued",  # the pool thread handed the result back (InFlight._finish)
    "record_started",  # the job thread records it (batch.record: INSERT, committed)
    "record_committed",
    "posted",  # the job thread posted the result to the I/O thread (IOThread.post)
    "settling",  # the I/O thread carries it out (Session.settle)
    "reply_started",  # amqp.publish_reply: the reply, on the confirm-mode channel
    "reply_confirmed",
)


def _stamp(stage: str, ids: Iterable[str | None]) -> None:
    now = time.perf_counter()
    STAMPS.extend((stage, message_id or "", now) for message_id in ids)


def _around(owner: Any, name: str, before: str, after: str | None, ids: Callable[..., Iterable[str | None]]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        taken = list(ids(*args, **kwargs))
        _stamp(before, taken)
        result = original(*args, **kwargs)
        if after is not None:
            _stamp(after, taken)
        return result

    setattr(owner, name, stamped)


def install() -> None:
    _around(io_thread.IOThread, "_on_delivery", "io_received", None, lambda _self, d: [d.message_id])
    _around(inflight.Recorder, "take", "job_taken", None, lambda _self, batch: [d.message_id for d in batch])
    _around(inflight.InFlight, "submit", "action_submitted", None, lambda _self, p: [p.delivery.message_id])
    _around(inflight, "run_one", "action_started", "action_ended", lambda _action, job, _host: [job.message_id])
    _around(inflight.InFlight, "_finish", "finished_queued", None, lambda _self, f: [f.pending.delivery.message_id])
    _around(
        inflight,
        "record",
        "record_started",
        "record_committed",
        lambda finished, *_a, **_k: [f.pending.delivery.message_id for f in finished],
    )
    _around(
        io_thread.IOThread,
        "post",
        "posted",
        None,
        lambda _self, report: [i.delivery.message_id for i in getattr(report, "instructions", ())],
    )
    _around(session.Session, "settle", "settling", None, lambda _self, ins: [i.delivery.message_id for i in ins])
    _around(amqp, "publish_reply", "reply_started", "reply_confirmed", lambda _ch, d, *_a, **_k: [d.message_id])

    def dump() -> None:
        with open(os.environ["TRACE_STAMPS"], "w", encoding="utf-8") as out:
            json.dump(STAMPS, out)

    atexit.register(dump)
