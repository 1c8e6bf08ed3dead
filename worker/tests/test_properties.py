"""Property-based tests: arbitrary deliveries through the contract and through process_batch.

Invariant: parse_job returns a Job within the documented bounds or raises InvalidMessage;
process_batch never raises, and every delivery ends recorded exactly once (Ack) or with a
non-empty reason (dead-lettered, or retried for a failing action).  Fixed seed
(derandomize) and bounded example counts keep the run predictable.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import strategies
from account_worker.decisions import Ack, DeadLetter, Retry
from account_worker.delivery import Delivery
from account_worker.errors import InvalidMessage, RecordRejected, TransientJobError
from account_worker.messages import (
    MAX_ACCOUNT_UUID_LENGTH,
    MAX_ATTEMPT,
    MAX_MESSAGE_ID_LENGTH,
    Job,
    parse_job,
)
from account_worker.store import RecordedRun, Run
from fakes import FakeAction, batch_settings, process_batch

PURE = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
ACCOUNTS = {"1234": "app-1234.example.net", "5678": "app-5678.example.net", "flaky": "app-f.example.net"}
INT4_MAX = 2**31 - 1

# ---------------------------------------------------------------------------- strategies

scalars = strategies.scalars(max_text=40)
json_values = strategies.json_values(scalars, max_items=4, max_key=8, max_leaves=20)
texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=string.printable, max_size=300),
    st.sampled_from(["", " ", "\x00", "\ud800", "1234", "5678", "flaky", "x" * 256, "a\nb"]),
)
fields = st.one_of(texts, json_values)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Mostly job-shaped JSON with arbitrary field values; sometimes any JSON or any bytes."""
    kind = draw(st.sampled_from(["job", "job", "job", "job", "json", "bytes", "escaped"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    data: dict[str, Any] = {}
    data["apikey"] = draw(fields) if kind == "escaped" else "key"
    data["account_uuid"] = draw(st.sampled_from(sorted(ACCOUNTS))) if draw(st.booleans()) else draw(fields)
    if draw(st.booleans()):
        data["payload"] = draw(json_values)
    text = json.dumps(data, ensure_ascii=draw(st.booleans()), allow_nan=True)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, not escaped: send what a careless client would
        return text.encode("utf-8", "surrogatepass")


header_values = st.one_of(scalars, st.binary(max_size=10), st.lists(scalars, max_size=3))
headers = st.one_of(
    st.none(),
    st.fixed_dictionaries({"x-attempt": st.integers(1, 5)}, optional={"x-delivery-count": st.integers(0, 5)}),
    st.dictionaries(
        st.one_of(st.sampled_from(["x-attempt", "x-delivery-count", "x-death"]), st.text(max_size=10)),
        header_values,
        max_size=4,
    ),
)
good_ids = st.text(alphabet=string.ascii_letters + string.digits + "-._", min_size=1, max_size=40)
message_ids = st.one_of(good_ids, st.none(), st.text(max_size=300))
optional_text = st.one_of(st.none(), st.text(alphabet=string.printable, max_size=40), st.text(max_size=300))


@st.composite
def deliveries(draw: st.DrawFn, tag: int) -> Delivery:
    return Delivery(
        tag=tag,
        source=None,
        body=draw(bodies()),
        message_id=draw(message_ids),
        headers=draw(headers),
        reply_to=draw(optional_text),
        correlation_id=draw(optional_text),
        redelivered=draw(st.booleans()),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[Delivery]:
    size = draw(st.integers(min_value=1, max_value=12))
    return [draw(deliveries(tag)) for tag in range(1, size + 1)]


# ---------------------------------------------------------------------------- the contract


def _within_bounds(job: Job) -> None:
    assert 1 <= len(job.message_id) <= MAX_MESSAGE_ID_LENGTH and job.message_id.isascii()
    assert job.message_id.isprintable() and " " not in job.message_id
    assert 1 <= len(job.account_uuid) <= MAX_ACCOUNT_UUID_LENGTH and job.account_uuid.isprintable()
    job.account_uuid.encode("utf-8")
    job.apikey.encode("utf-8")
    assert 1 <= job.attempt <= MAX_ATTEMPT
    assert job.payload is None or isinstance(job.payload, dict)


@PURE
@given(body=bodies(), message_id=message_ids, headers=headers, reply_to=optional_text, correlation_id=optional_text)
def test_parse_job_returns_a_bounded_job_or_says_why_not(body, message_id, headers, reply_to, correlation_id):
    try:
        job = parse_job(body, message_id, headers, reply_to=reply_to, correlation_id=correlation_id)
    except InvalidMessage as exc:
        assert exc.reason
        return
    _within_bounds(job)


# ---------------------------------------------------------------------------- process_batch


class StrictStore:
    """An in-memory store that refuses what PostgreSQL refuses (NUL, invalid Unicode, int4 overflow)."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()
        self.hosts: dict[str, str] = {}

    @staticmethod
    def _check(values: Sequence[object]) -> None:
        for value in values:
            if isinstance(value, str):
                if "\x00" in value:
                    raise RecordRejected("text cannot contain NUL")
                value.encode("utf-8")  # UnicodeEncodeError: not a RecordRejected, narrowed all the same
            elif isinstance(value, int) and not -(2**31) <= value <= INT4_MAX:
                raise RecordRejected("integer out of range")

    def lookup_hosts(self, account_uuids: Sequence[str]) -> dict[str, str]:
        self._check(account_uuids)
        return {u: ACCOUNTS[u] for u in account_uuids if u in ACCOUNTS}

    def find_runs(self, message_ids: Sequence[str]) -> dict[str, RecordedRun]:
        self._check(message_ids)
        return {m: RecordedRun(m, self.hosts[m], "done", True) for m in message_ids if m in self.rows}

    def record_runs(self, runs: Sequence[Run]) -> list[RecordedRun]:
        for run in runs:
            self._check(list(run))
        out = []
        for run in runs:
            if run.message_id in self.rows:
                out.append(RecordedRun(run.message_id, self.hosts[run.message_id], "done", True))
            else:
                self.rows[run.message_id] += 1
                self.hosts[run.message_id] = run.host
                out.append(RecordedRun(run.message_id, run.host, run.status, False))
        return out


@PURE
@given(batch=batches())
def test_every_delivery_ends_recorded_once_or_with_a_reason(batch):
    store = StrictStore()
    action = FakeAction({"flaky": TransientJobError("busy")})
    result = process_batch(batch, store, action, batch_settings(max_attempts=3, retry_delay_ms=10, apikey="key"))
    assert [i.delivery for i in result.instructions] == batch
    assert not result.database_down
    for instruction in result.instructions:
        event(type(instruction.decision).__name__)
        match instruction.decision:
            case Ack():
                assert store.rows[instruction.delivery.message_id] == 1
            case DeadLetter(reason=reason) | Retry(reason=reason):
                assert reason.strip()
            case other:
                raise AssertionError(f"unexpected decision {other!r}")
    assert all(count == 1 for count in store.rows.values())
