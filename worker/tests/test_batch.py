from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from account_worker.actions import Outcome, default_action
from account_worker.batch import BatchSettings
from account_worker.decisions import Ack, DeadLetter, Requeue, Retry
from account_worker.delivery import Delivery, requeue_all
from account_worker.errors import DatabaseUnavailable, InvalidMessage, PermanentJobError, TransientJobError
from account_worker.store import RecordedRun
from fakes import FakeAction, FakeStore, batch_settings, default_config, process_batch

SOURCE = object()  # the session the test deliveries arrived on


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
        source=SOURCE,
        body=raw,
        message_id=mid if mid is not None else f"m{tag}",
        headers={"x-attempt": attempt} if attempt is not None else None,
        reply_to=reply_to,
        correlation_id=f"c{tag}" if reply_to else None,
        redelivered=redelivered,
    )


SETTINGS = batch_settings(max_attempts=3, retry_delay_ms=1500, apikey="key")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore({"u1": "host-1", "u2": "host-2", "bad": "host-bad", "flaky": "host-f"})


def verdicts(result) -> list[type]:
    return [type(i.decision) for i in result.instructions]


def test_happy_batch_commits_once_and_acks_with_replies(store):
    action = FakeAction()
    batch = [delivery(1, "u1", reply_to="replies"), delivery(2, "u2")]
    result = process_batch(batch, store, action, SETTINGS)
    assert not result.database_down
    assert verdicts(result) == [Ack, Ack]
    assert store.commits == 1
    # An action with side effects: every message_id is looked up before anything runs.
    assert store.calls == ["lookup_hosts", "find_runs", "record_runs"]
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
    assert verdicts(result)[:5] == [DeadLetter] * 5
    reasons = [i.decision.reason for i in result.instructions[:5]]
    assert reasons[0] == "invalid message: body is not JSON"
    assert reasons[1] == "bad apikey"
    assert reasons[2] == "unknown account: nobody"
    assert reasons[3] == "action failed: PermanentJobError: host rejected"
    assert reasons[4] == "invalid message: missing message_id property"
    assert verdicts(result)[5] is Ack
    assert set(store.runs) == {"m6"}  # failures are not recorded as runs
    assert ("m3", "host") not in action.calls and len(action.calls) == 2


def test_apikey_not_checked_when_unset(store):
    settings = batch_settings(max_attempts=3, retry_delay_ms=0, apikey=None)
    result = process_batch([delivery(1, apikey="anything")], store, FakeAction(), settings)
    assert verdicts(result) == [Ack]


def test_transient_failure_retries_with_incremented_attempt(store):
    action = FakeAction({"flaky": TransientJobError("timeout")})
    result = process_batch([delivery(1, "flaky"), delivery(2, "flaky", attempt=2)], store, action, SETTINGS)
    first, second = (i.decision for i in result.instructions)
    assert isinstance(first, Retry) and (first.next_attempt, first.delay_ms) == (2, 1500)
    assert isinstance(second, Retry) and second.next_attempt == 3
    exhausted = process_batch([delivery(3, "flaky", attempt=3)], store, action, SETTINGS).instructions[0].decision
    assert isinstance(exhausted, DeadLetter)
    assert exhausted.reason.startswith("retries exhausted: ")


def test_unexpected_exception_and_bad_status_are_bounded_retries(store):
    action = FakeAction({"u1": ZeroDivisionError("x"), "u2": ""})
    result = process_batch([delivery(1, "u1"), delivery(2, "u2")], store, action, SETTINGS)
    assert verdicts(result) == [Retry, Retry]
    assert "action failed: ZeroDivisionError" in result.instructions[0].decision.reason


@pytest.mark.parametrize("failing", ["lookup_hosts", "find_runs", "record_runs"])
def test_database_down_requeues_everything_and_acks_nothing(store, failing):
    store.down_on.add(failing)
    batch = [delivery(1, "u1", redelivered=True), delivery(2, body=b"junk"), delivery(3, "nobody")]
    result = process_batch(batch, store, FakeAction(), SETTINGS)
    assert result.database_down
    assert verdicts(result) == [Requeue] * 3
    assert all(i.reply is None for i in result.instructions)
    assert store.commits == 0


def test_action_reporting_database_down_requeues(store):
    action = FakeAction({"u2": DatabaseUnavailable("pool exhausted")})
    result = process_batch([delivery(1, "u1"), delivery(2, "u2")], store, action, SETTINGS)
    assert result.database_down and verdicts(result) == [Requeue] * 2
    assert store.commits == 0


def test_redelivered_message_has_no_second_side_effect_but_is_acked_and_replied(store):
    action = FakeAction()
    process_batch([delivery(1, "u1")], store, action, SETTINGS)
    store.accounts["u1"] = "moved-host"
    again = process_batch([delivery(7, "u1", mid="m1", reply_to="r", redelivered=True)], store, action, SETTINGS)
    assert verdicts(again) == [Ack]
    assert again.instructions[0].decision == Ack(duplicate=True)  # counted as a duplicate, not as done
    assert action.calls == [("m1", "host-1")]  # action not run again
    assert again.instructions[0].reply == {"account_uuid": "u1", "host": "host-1", "status": "done", "message_id": "m1"}
    assert len(store.runs) == 1


def test_duplicate_within_one_batch_runs_once(store):
    action = FakeAction()
    batch = [delivery(1, "u1", mid="dup"), delivery(2, "u1", mid="dup", reply_to="r")]
    result = process_batch(batch, store, action, SETTINGS)
    assert [i.decision for i in result.instructions] == [Ack(), Ack(duplicate=True)]
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
    assert verdicts(result) == [Ack]
    assert result.instructions[0].reply["host"] == "other-host"


def test_a_senders_repeat_of_a_recorded_job_is_not_run_again(store):
    """Not redelivered (a second publish, a copy given back), but its message_id was recorded: acked as a
    duplicate with the first run's reply, and the action does not run a second time."""
    action = FakeAction()
    process_batch([delivery(1, "u1")], store, action, SETTINGS)
    again = process_batch([delivery(9, "u1", mid="m1", reply_to="r")], store, action, SETTINGS)
    assert [i.decision for i in again.instructions] == [Ack(duplicate=True)]
    assert action.calls == [("m1", "host-1")]
    assert len(store.runs) == 1
    assert again.instructions[0].reply["host"] == "host-1"


def test_the_built_in_action_looks_up_only_redeliveries(store):
    """Without side effects to guard, first deliveries skip the look-up: the INSERT ... ON CONFLICT answers a
    repeat with the run recorded first."""
    settings = replace(SETTINGS, look_up_every_run=False)
    process_batch([delivery(1, "u1")], store, default_action, settings)
    store.calls.clear()
    again = process_batch([delivery(9, "u1", mid="m1", reply_to="r")], store, default_action, settings)
    assert store.calls == ["lookup_hosts", "record_runs"]
    assert [i.decision for i in again.instructions] == [Ack(duplicate=True)]
    assert len(store.runs) == 1 and again.instructions[0].reply["host"] == "host-1"
    store.calls.clear()
    process_batch([delivery(9, "u1", mid="m1", redelivered=True)], store, default_action, settings)
    assert store.calls == ["lookup_hosts", "find_runs"]


def test_settings_look_up_every_run_unless_the_action_is_the_built_in_one():
    cfg = default_config()
    assert BatchSettings.from_config(cfg, default_action).look_up_every_run is False
    assert BatchSettings.from_config(cfg, FakeAction()).look_up_every_run is True
    assert BatchSettings.from_config(cfg).look_up_every_run is True


def test_records_attempt_number(store):
    process_batch([delivery(1, "u1", attempt=3)], store, FakeAction(), SETTINGS)
    assert "m1" in store.runs


def test_empty_and_all_invalid_batches_touch_no_database(store):
    assert process_batch([], store, FakeAction(), SETTINGS).instructions == ()
    result = process_batch([delivery(1, body=b"\xff")], store, FakeAction(), SETTINGS)
    assert verdicts(result) == [DeadLetter]
    assert store.calls == []


def test_requeue_all_gives_every_delivery_back_in_order():
    batch = [delivery(1), delivery(2)]
    result = requeue_all(batch, "shutting down", database_down=False)
    assert [i.delivery for i in result.instructions] == batch
    assert [i.decision for i in result.instructions] == [Requeue("shutting down")] * 2
    assert not result.database_down
    assert requeue_all(batch, "database unavailable: x", database_down=True).database_down


def test_an_outcome_with_output_is_recorded_and_replied_also_on_redelivery(store):
    def action(job, host):
        return Outcome("done", 0, f"up on {host}\n", "")

    result = process_batch([delivery(1, "u1", reply_to="replies")], store, action, SETTINGS)
    assert verdicts(result) == [Ack]
    assert store.runs["m1"].stdout == "up on host-1\n" and store.runs["m1"].exit_status == 0
    assert result.instructions[0].reply == {
        "account_uuid": "u1",
        "host": "host-1",
        "status": "done",
        "message_id": "m1",
        "exit_status": 0,
        "stdout": "up on host-1\n",
        "stderr": "",
    }
    again = process_batch([delivery(1, "u1", reply_to="replies", redelivered=True)], store, FakeAction(), SETTINGS)
    assert again.instructions[0].reply == result.instructions[0].reply


def test_an_invalid_command_from_the_action_is_dead_lettered_as_invalid(store):
    def action(job, host):
        raise InvalidMessage("command 'rm' is not allow-listed")

    result = process_batch([delivery(1)], store, action, SETTINGS)
    decision = result.instructions[0].decision
    assert isinstance(decision, DeadLetter)
    assert decision.reason == "invalid message: command 'rm' is not allow-listed"


def test_with_a_pool_the_actions_of_a_batch_run_at_the_same_time(store):
    together = threading.Barrier(4, timeout=30)  # only passed if four actions wait at once

    def action(job, host):
        together.wait()
        return "done"

    with ThreadPoolExecutor(max_workers=4) as pool:
        result = process_batch([delivery(n) for n in range(1, 5)], store, action, SETTINGS, pool=pool)
    assert verdicts(result) == [Ack] * 4
    assert store.commits == 1  # recorded once, after every action finished


def test_with_a_pool_a_duplicate_runs_only_when_its_first_delivery_failed(store):
    calls = []

    def action(job, host):
        calls.append(job.message_id)
        if len(calls) == 1:
            raise TransientJobError("first try fails")
        return "done"

    batch = [delivery(1, mid="same"), delivery(2, mid="same"), delivery(3, mid="other")]
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = process_batch(batch, store, action, SETTINGS, pool=pool)
    assert calls == ["same", "other", "same"]
    assert verdicts(result) == [Retry, Ack, Ack]
    assert store.runs["same"].status == "done"
