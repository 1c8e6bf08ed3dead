"""Running a take's actions, and the one duplicate rule that batch.py and inflight.py both follow."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from account_worker.actions import Outcome
from account_worker.decisions import Ack, Retry
from account_worker.delivery import Delivery
from account_worker.errors import DatabaseUnavailable, TransientJobError
from account_worker.execution import Finished, Pending, finished_deliveries, next_duplicate, run_followers, run_one
from account_worker.inflight import Recorder
from account_worker.messages import Job
from fakes import FakeAction, FakeStore, batch_settings, process_batch

SOURCE = object()
SETTINGS = batch_settings(max_attempts=3, retry_delay_ms=1000, apikey="key")


def delivery(tag: int, account: str = "u1", mid: str = "a") -> Delivery:
    body = json.dumps({"apikey": "key", "account_uuid": account}).encode()
    return Delivery(tag=tag, source=SOURCE, body=body, message_id=mid)


def job(mid: str = "a", account: str = "u1") -> Job:
    return Job(apikey="key", account_uuid=account, message_id=mid)


def pending(*tags: int) -> Pending:
    first, *rest = tags
    return Pending(delivery(first), job(), "host-1", [(delivery(t), job()) for t in rest])


# ---------------------------------------------------------------------------- next_duplicate


def test_a_run_that_succeeded_answers_its_followers_no_duplicate_runs():
    first = pending(1, 2, 3)
    assert next_duplicate(Finished(first, Outcome("done"))) is None
    assert [d.tag for d, _ in first.followers] == [2, 3]


def test_a_failed_run_without_followers_hands_over_to_nobody():
    assert next_duplicate(Finished(pending(1), TransientJobError("x"))) is None


def test_a_failed_run_hands_over_to_its_first_follower_with_the_rest():
    first = pending(1, 2, 3)
    successor = next_duplicate(Finished(first, TransientJobError("x")))
    assert successor is not None
    assert (successor.delivery.tag, successor.host) == (2, "host-1")
    assert [d.tag for d, _ in successor.followers] == [3]
    assert first.followers == []  # answered by nobody now: the successor carries them


def test_an_outage_is_a_failure_to_the_rule_the_callers_decide_what_runs_while_down():
    successor = next_duplicate(Finished(pending(1, 2), DatabaseUnavailable("down")))
    assert successor is not None and successor.delivery.tag == 2


def test_run_followers_runs_them_one_at_a_time_until_one_succeeds():
    outcomes = iter([TransientJobError("again"), "done"])

    def action(job: Job, host: str) -> str:
        result = next(outcomes)
        if isinstance(result, Exception):
            raise result
        return result

    first = pending(1, 2, 3, 4)
    after = run_followers(action, Finished(first, TransientJobError("x")))
    assert [(f.pending.delivery.tag, type(f.result).__name__) for f in after] == [
        (2, "TransientJobError"),
        (3, "Outcome"),
    ]
    assert [d.tag for d, _ in after[-1].pending.followers] == [4]  # answered by the run of 3
    assert first.followers == [] and after[0].pending.followers == []


def test_finished_deliveries_include_the_followers():
    assert [d.tag for d in finished_deliveries([Finished(pending(1, 2), Outcome("done"))])] == [1, 2]


def test_run_one_returns_the_error_or_the_outcome_and_refuses_an_empty_status():
    assert run_one(lambda j, h: "done", job(), "h") == Outcome("done")
    assert isinstance(run_one(lambda j, h: "", job(), "h"), TypeError)
    error = TransientJobError("busy")

    def failing(j: Job, h: str) -> str:
        raise error

    assert run_one(failing, job(), "h") is error


# ---------------------------------------------------------------------------- both callers follow it


class FailsFirst(FakeAction):
    """Fails the first run of each message, then succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: set[str] = set()

    def __call__(self, job: Job, host: str) -> str:
        self.calls.append((job.message_id, host))
        if job.message_id not in self.failed:
            self.failed.add(job.message_id)
            raise TransientJobError("first run fails")
        return "done"


def _batch(take, store, action):
    return {i.delivery.tag: i.decision for i in process_batch(take, store, action, SETTINGS).instructions}


def _concurrent(take, store, action):
    posted: list = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        recorder = Recorder(store, action, SETTINGS, logging.getLogger("t"), pool=pool, limit=4, post=posted.append)
        recorder.take(take)
        recorder.drain()
    return {i.delivery.tag: i.decision for result in posted for i in result.instructions}


@pytest.mark.parametrize("process", [_batch, _concurrent], ids=["batch", "concurrent"])
def test_batch_and_concurrent_processing_apply_the_same_duplicate_rule(process):
    store = FakeStore({"u1": "host-1"})
    action = FailsFirst()
    take = [delivery(1), delivery(2), delivery(3), delivery(4, mid="b")]
    decisions = process(take, store, action)
    assert isinstance(decisions[1], Retry) and isinstance(decisions[4], Retry)  # first runs fail
    assert decisions[2] == Ack(False) and decisions[3] == Ack(True)  # 2 ran instead, 3 answered by its run
    assert sorted(mid for mid, _ in action.calls) == ["a", "a", "b"]
