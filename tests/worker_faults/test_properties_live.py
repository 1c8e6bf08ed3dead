"""Property-based: arbitrary deliveries through the worker's core against the real PostgreSQL.

The worker's own process_batch and its psycopg adapter (account_worker.db.Database) on the
scenario's database, message ids under a prefix of their own (deleted afterwards).  Invariant:
no exception escapes, and each delivery is recorded exactly once (Ack) or dead-lettered with a
non-empty reason.  Fixed seed, 100 examples.
"""

from __future__ import annotations

import json
import logging
import string
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import strategies
from account_worker.db import Database
from account_worker.decisions import Ack, DeadLetter
from account_worker.delivery import Delivery
from account_worker.errors import RecordRejected
from account_worker.isolation import narrow
from account_worker.messages import Job
from account_worker.store import Run
from deployment import Env
from fakes import batch_settings, process_batch
from support.db import delete_rows

LIVE = settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
PREFIX = f"prop-{uuid.uuid4().hex[:8]}-"
QUIET = logging.getLogger("worker-faults.properties")  # the core's job_failed lines are expected here
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
EXAMPLES = {"batches": 0, "deliveries": 0, "ack": 0, "dead_letter": 0}  # deliveries: drawn, discarded ones too

scalars = strategies.scalars(max_text=30)
json_values = strategies.json_values(scalars, max_items=3, max_key=6, max_leaves=12)
fields = st.one_of(
    st.text(max_size=300), st.sampled_from(["", "\x00", "\ud800", "x" * 256, "a\nb", "a\x00b"]), json_values
)
headers = st.one_of(
    st.none(),
    st.none(),
    st.fixed_dictionaries({"x-attempt": st.integers(1, 5)}),
    st.fixed_dictionaries({"x-attempt": st.integers(-(2**63), 2**63)}),
    st.dictionaries(st.sampled_from(["x-attempt", "x-delivery-count", "other"]), scalars, max_size=3),
)
good_suffixes = st.text(alphabet=string.ascii_letters + string.digits + "-._", max_size=30)
suffixes = st.one_of(good_suffixes, good_suffixes, good_suffixes, st.text(max_size=300))


@st.composite
def bodies(draw: st.DrawFn, accounts: list[str]) -> bytes:
    kind = draw(st.sampled_from(["job", "job", "job", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    data: dict[str, Any] = {"apikey": "it" if draw(st.integers(0, 3)) else draw(fields)}
    data["account_uuid"] = draw(st.sampled_from(accounts)) if draw(st.integers(0, 2)) else draw(fields)
    if draw(st.booleans()):
        data["payload"] = draw(json_values)
    return json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def batches(draw: st.DrawFn, accounts: list[str]) -> list[Delivery]:
    size = draw(st.integers(min_value=1, max_value=8))
    out = []
    for tag in range(1, size + 1):
        EXAMPLES["deliveries"] += 1
        out.append(
            Delivery(
                tag=tag,
                source=None,
                body=draw(bodies(accounts)),
                # unique per delivery, so "recorded exactly once" is about this delivery alone
                message_id=f"{PREFIX}{EXAMPLES['deliveries']}-{draw(suffixes)}",
                headers=draw(headers),
                redelivered=draw(st.booleans()),
            )
        )
    return out


def _rows(check: psycopg.Connection, message_id: str | None) -> int:
    """job_runs rows for message_id; a value PostgreSQL cannot even hold has none."""
    if message_id is None or "\x00" in message_id or (not message_id.isascii() and _not_unicode(message_id)):
        return 0
    return int(check.execute("SELECT count(*) FROM job_runs WHERE message_id = %s", (message_id,)).fetchone()[0])


def _not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _done(job: Job, host: str) -> str:
    return "done"


@pytest.fixture(scope="module")
def database(env: Env) -> Iterator[Database]:
    db = Database(env.database_url)
    yield db
    db.close()
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        delete_rows(conn, PREFIX)


def test_arbitrary_batches_against_postgresql_end_recorded_once_or_dead_lettered(env: Env, database: Database):
    accounts = sorted(env.accounts)
    check = psycopg.connect(env.database_url, autocommit=True)

    @LIVE
    @given(batch=batches(accounts))
    def run(batch: list[Delivery]) -> None:
        EXAMPLES["batches"] += 1
        result = process_batch(
            batch, database, _done, batch_settings(max_attempts=3, retry_delay_ms=10, apikey="it"), QUIET
        )
        assert not result.database_down
        for instruction in result.instructions:
            rows = _rows(check, instruction.delivery.message_id)
            match instruction.decision:
                case Ack():
                    EXAMPLES["ack"] += 1
                    event("ack")
                    assert rows == 1
                case DeadLetter(reason=reason):
                    EXAMPLES["dead_letter"] += 1
                    event("dead_letter")
                    assert reason.strip() and rows == 0
                case other:
                    raise AssertionError(f"unexpected decision {other!r}")

    try:
        run()
    finally:
        check.close()
    env.results.append(
        {
            "test": "hypothesis vs postgresql",
            "sent": EXAMPLES["ack"] + EXAMPLES["dead_letter"],
            "recorded": EXAMPLES["ack"],
            "duplicates": 0,
            "dead_lettered": EXAMPLES["dead_letter"],
            "examples": EXAMPLES["batches"],
            "seed": "derandomize",
        }
    )
    print(f"\nhypothesis vs postgresql: {EXAMPLES}")
    assert EXAMPLES["ack"] > 0 and EXAMPLES["dead_letter"] > 0


def test_the_adapter_reports_values_postgresql_refuses_as_rejected_records(env: Env, database: Database):
    """What used to crash the job thread: a value out of a column's range in the INSERT."""
    account, host = sorted(env.accounts.items())[0]
    runs = [Run(f"{PREFIX}range-{n}", account, host, "done", 2**40 if n == 3 else 1) for n in range(6)]
    with pytest.raises(RecordRejected) as info:
        database.record_runs(runs)
    assert "out of range" in str(info.value)
    recorded, refused = narrow(runs, database.record_runs)
    assert [run.message_id for run, _ in refused] == [f"{PREFIX}range-3"]
    assert sorted(r.message_id for part in recorded for r in part) == sorted(
        run.message_id for run in runs if run.attempts == 1
    )
    database.ping()  # the connection survived: not an outage
