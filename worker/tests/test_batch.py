from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from account_worker.batch import BatchSettings, Delivery, process_batch
from account_worker.db import RecordedRun, Run
from account_worker.decisions import Verdict
from account_worker.errors import DatabaseUnavailable, PermanentJobError, TransientJobError
from account_worker.messages import Job


class FakeStore:
    """In-memory accounts + job_runs; `down` makes every call fail like a dead database."""

    def __init__(self, accounts: dict[str, str]) -> None:
        self.accounts = accounts
        self.runs: dict[str, RecordedRun] = {}
        self.down_on: set[str] = set()
        self.calls: list[str] = []
        self.commits = 0

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if name in self.down_on:
            raise DatabaseUnavailable("connection refused")

    def lookup_hosts(self, account_uuids: Sequence[str]) -> dict[str, str]:
        self._check("lookup_hosts")
        return {u: self.accounts[u] for u in account_uuids if u in self.accounts}

    def find_runs(self, message_ids: Sequence[str]) -> dict[str, RecordedRun]:
        self._check("find_runs")
        return {m: self.runs[m]._replace(already_done=True) for m in message_ids if m in self.runs}

    def record_runs(self, runs: Sequence[Run]) -> list[RecordedRun]:
        self._check("record_runs")
        out = []
        for run in runs:
            if run.message_id in self.runs:
                out.append(self.runs[run.message_id]._replace(already_done=True))
            else:
                self.runs[run.message_id] = RecordedRun(run.message_id, run.host, run.status, False)
                out.append(self.runs[run.message_id])
        self.commits += 1
        return out


class FakeAction:
    def __init__(self, behaviour: dict[str, BaseException | str] | None = None) -> None:
        self.behaviour = behaviour or {}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, job: Job, host: str) -> str:
        self.calls.append((job.message_id, host))
        outcome = self.behaviour.get(job.account_uuid, "done")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def delivery(
    tag: int,
    account: str = "u1",
    *,
    mid: str | None = None,
    apikey: str = "key",
    attempt=None,
    reply_to: str | None = None,
    body: bytes | None = None,
    redelivered: bool = False,
) -> Delivery:
    raw = body if body is not None else json.dumps({"apikey": apikey, "account_uuid": account}).encode()
    return Delivery(
        tag=tag,
        generation=1,
        body=raw,
        message_id=mid if mid is not None else f"m{tag}",
        headers={"x-attempt": attempt} if attempt is not None else None,
        reply_to=reply_to,
        correlation_id=f"c{tag}" if reply_to else None,
        redelivered=redelivered,
    )


SETTINGS = BatchSettings(max_attempts=3, retry_delay_ms=1500, apikey="key")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore({"u1": "host-1", "u2": "host-2", "bad": "host-bad", "flaky": "host-f"})


def verdicts(result) -> list[Verdict]:
    return [i.decision.verdict for i in result.instructions]


def test_happy_batch_commits_once_and_acks_with_replies(store):
    action = FakeAction()
    batch = [delivery(1, "u1", reply_to="replies"), delivery(2, "u2")]
    result = process_batch(batch, store, action, SETTINGS)
    assert not result.database_down
    assert verdicts(result) == [Verdict.ACK, Verdict.ACK]
    assert store.commits == 1
    # First deliveries skip the redelivery lookup: the INSERT ... ON CONFLICT deduplicates them.
    assert store.calls == ["lookup_hosts", "record_runs"]
    assert action.calls == [("m1", "host-1"), ("m2", "host-2")]
    expected = {"account_uuid": "u1", "host": "host-1", "status": "done", "message_id": "m1"}
    assert result.instructions[0].reply == expected
    assert result.instructions[1].reply is None
    assert [i.delivery.tag for i in result.instructions] == [1, 2]


def test_redelivered_jobs_are_looked_up_before_running(store):
    process_batch([delivery(1, "u1"), delivery(2, "u2", redelivered=True)], store, FakeAction(), SETTINGS)
    assert store.calls == ["lookup_hosts", "find_runs", "record_runs"]


def test_poison_is_dead_lettered_with_reasons(store):
    action = FakeAction({"bad": PermanentJobError("host rejected")})
    batch = [
        delivery(1, body=b"{nope"),
        delivery(2, apikey="wrong"),
        delivery(3, "nobody"),
        delivery(4, "bad"),
        delivery(5, mid=""),
        delivery(6, "u1"),
    ]
    result = process_batch(batch, store, action, SETTINGS)
    reasons = [i.decision.reason for i in result.instructions]
    assert verdicts(result)[:5] == [Verdict.DEAD_LETTER] * 5
    assert reasons[0] == "invalid message: body is not JSON"
    assert reasons[1] == "bad apikey"
    assert reasons[2] == "unknown account: nobody"
    assert reasons[3] == "permanent failure: PermanentJobError: host rejected"
    assert reasons[4] == "invalid message: missing message_id property"
    assert verdicts(result)[5] is Verdict.ACK
    assert set(store.runs) == {"m6"}  # failures are not recorded as runs
    assert ("m3", "host") not in action.calls and len(action.calls) == 2


def test_apikey_not_checked_when_unset(store):
    settings = BatchSettings(max_attempts=3, retry_delay_ms=0, apikey=None)
    result = process_batch([delivery(1, apikey="anything")], store, FakeAction(), settings)
    assert verdicts(result) == [Verdict.ACK]


def test_transient_failure_retries_with_incremented_attempt(store):
    action = FakeAction({"flaky": TransientJobError("timeout")})
    result = process_batch([delivery(1, "flaky"), delivery(2, "flaky", attempt=2)], store, action, SETTINGS)
    first, second = (i.decision for i in result.instructions)
    assert first.verdict is Verdict.RETRY and (first.next_attempt, first.delay_ms) == (2, 1500)
    assert second.verdict is Verdict.RETRY and second.next_attempt == 3
    exhausted = process_batch([delivery(3, "flaky", attempt=3)], store, action, SETTINGS).instructions[0].decision
    assert exhausted.verdict is Verdict.DEAD_LETTER
    assert exhausted.reason is not None and exhausted.reason.startswith("retries exhausted: ")


def test_unexpected_exception_and_bad_status_are_bounded_retries(store):
    action = FakeAction({"u1": ZeroDivisionError("x"), "u2": ""})
    result = process_batch([delivery(1, "u1"), delivery(2, "u2")], store, action, SETTINGS)
    assert verdicts(result) == [Verdict.RETRY, Verdict.RETRY]
    assert "unexpected error: ZeroDivisionError" in (result.instructions[0].decision.reason or "")


@pytest.mark.parametrize("failing", ["lookup_hosts", "find_runs", "record_runs"])
def test_database_down_requeues_everything_and_acks_nothing(store, failing):
    store.down_on.add(failing)
    batch = [delivery(1, "u1", redelivered=True), delivery(2, body=b"junk"), delivery(3, "nobody")]
    result = process_batch(batch, store, FakeAction(), SETTINGS)
    assert result.database_down
    assert verdicts(result) == [Verdict.REQUEUE] * 3
    assert all(i.reply is None for i in result.instructions)
    assert store.commits == 0


def test_action_reporting_database_down_requeues(store):
    action = FakeAction({"u2": DatabaseUnavailable("pool exhausted")})
    result = process_batch([delivery(1, "u1"), delivery(2, "u2")], store, action, SETTINGS)
    assert result.database_down and verdicts(result) == [Verdict.REQUEUE] * 2
    assert store.commits == 0


def test_redelivered_message_has_no_second_side_effect_but_is_acked_and_replied(store):
    action = FakeAction()
    process_batch([delivery(1, "u1")], store, action, SETTINGS)
    store.accounts["u1"] = "moved-host"
    again = process_batch([delivery(7, "u1", mid="m1", reply_to="r", redelivered=True)], store, action, SETTINGS)
    assert verdicts(again) == [Verdict.ACK]
    assert action.calls == [("m1", "host-1")]  # action not run again
    assert again.instructions[0].reply == {"account_uuid": "u1", "host": "host-1", "status": "done", "message_id": "m1"}
    assert len(store.runs) == 1


def test_duplicate_within_one_batch_runs_once(store):
    action = FakeAction()
    batch = [delivery(1, "u1", mid="dup"), delivery(2, "u1", mid="dup", reply_to="r")]
    result = process_batch(batch, store, action, SETTINGS)
    assert verdicts(result) == [Verdict.ACK, Verdict.ACK]
    assert action.calls == [("dup", "host-1")]
    assert result.instructions[1].reply is not None


def test_race_with_other_worker_is_detected_at_record_time(store):
    """Another worker committed the same message between find_runs and record_runs."""

    class RacingStore(FakeStore):
        def find_runs(self, message_ids):
            found = super().find_runs(message_ids)
            self.runs["m1"] = RecordedRun("m1", "other-host", "done", False)
            return found

    racing = RacingStore(store.accounts)
    result = process_batch([delivery(1, "u1", reply_to="r", redelivered=True)], racing, FakeAction(), SETTINGS)
    assert verdicts(result) == [Verdict.ACK]
    assert result.instructions[0].reply["host"] == "other-host"


def test_duplicate_publish_of_a_recorded_job_is_acked_once_recorded(store):
    """Not redelivered, but its message_id was recorded before: the insert deduplicates it."""
    action = FakeAction()
    process_batch([delivery(1, "u1")], store, action, SETTINGS)
    again = process_batch([delivery(9, "u1", mid="m1", reply_to="r")], store, action, SETTINGS)
    assert verdicts(again) == [Verdict.ACK]
    assert len(store.runs) == 1
    assert again.instructions[0].reply["host"] == "host-1"


def test_records_attempt_number(store):
    process_batch([delivery(1, "u1", attempt=3)], store, FakeAction(), SETTINGS)
    assert "m1" in store.runs


def test_empty_and_all_invalid_batches_touch_no_database(store):
    assert process_batch([], store, FakeAction(), SETTINGS).instructions == ()
    result = process_batch([delivery(1, body=b"\xff")], store, FakeAction(), SETTINGS)
    assert verdicts(result) == [Verdict.DEAD_LETTER]
    assert store.calls == []
