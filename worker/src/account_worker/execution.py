"""Running the actions of a take: a job to run (Pending), its result (Finished), and the duplicate rule.

Actions never touch the database: run_one() and run_actions() only call them and hand
their outcome or error back to the job thread, which records it (batch.record).  A
message delivered more than once in the same take runs once: its later deliveries wait
as the first one's followers and are answered by its recorded run; only if that run
failed does the next of them run instead (next_duplicate, the one place this rule is
written; batch.py and inflight.py both follow it).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import NamedTuple

from account_worker.actions import Action, Outcome
from account_worker.delivery import Delivery
from account_worker.messages import Job


@dataclass(slots=True)
class Pending:
    """A job whose action is to run: its delivery, and later deliveries of the same message in its take.

    The followers are answered by its recorded run; if its action fails, the first of them runs instead.
    """

    delivery: Delivery
    job: Job
    host: str
    followers: list[tuple[Delivery, Job]] = field(default_factory=list)


class Finished(NamedTuple):
    """A Pending whose action returned (an Outcome) or raised (the Exception)."""

    pending: Pending
    result: Outcome | Exception


def next_duplicate(finished: Finished) -> Pending | None:
    """The duplicate rule: a later delivery of the same message in a take runs only if the one before it failed.

    If `finished`'s action failed and deliveries of its message wait as its followers, the
    first of them is the Pending to run next, with the others as its own followers;
    `finished` keeps none.  Otherwise None: its recorded run answers its followers.
    """
    pending = finished.pending
    if not isinstance(finished.result, Exception) or not pending.followers:
        return None
    (delivery, job), *rest = pending.followers
    pending.followers.clear()
    return Pending(delivery, job, pending.host, rest)


def finished_deliveries(finished: Sequence[Finished]) -> list[Delivery]:
    """The deliveries of `finished`, followers included."""
    return [d for f in finished for d in (f.pending.delivery, *(fd for fd, _ in f.pending.followers))]


def run_followers(action: Action, failed: Finished) -> list[Finished]:
    """After `failed`'s action failed: run its followers one at a time until one succeeds (it answers the rest)."""
    finished: list[Finished] = []
    successor = next_duplicate(failed)
    while successor is not None:
        done = Finished(successor, run_one(action, successor.job, successor.host))
        finished.append(done)
        successor = next_duplicate(done)
    return finished


def run_actions(
    action: Action, calls: Sequence[tuple[int, Job, str]], pool: Executor | None
) -> list[Outcome | Exception]:
    """Each call's outcome or error, in order; on the pool's threads when there is a pool and more than one."""
    if pool is None or len(calls) < 2:
        return [run_one(action, job, host) for _, job, host in calls]
    futures = [pool.submit(run_one, action, job, host) for _, job, host in calls]
    return [future.result() for future in futures]


def run_one(action: Action, job: Job, host: str) -> Outcome | Exception:
    """The action's outcome, or the exception it raised (classified later by decisions.decide)."""
    try:
        return _outcome(action(job, host))
    except Exception as exc:  # noqa: BLE001 - classified by decide() (DatabaseUnavailable: requeued)
        return exc


def _outcome(result: object) -> Outcome:
    """An action's return value as an Outcome (a bare status string is one without output)."""
    if isinstance(result, str) and result:
        return Outcome(result)
    if isinstance(result, Outcome) and isinstance(result.status, str) and result.status:
        return result
    raise TypeError(f"action returned {result!r}, expected a non-empty status string or an Outcome")
