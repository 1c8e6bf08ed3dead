"""The operators' DLQ tools against an in-memory queue: nothing lost, nothing removed by a summary."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

from account_worker import dlq
from account_worker.config import load_config
from fakes import QueueChannel


@pytest.fixture
def cfg(env):
    return load_config(env)


def dead(message_id, reason, failed_at="2026-11-25T10:00:00+00:00", **headers):
    props = pika.BasicProperties(
        message_id=message_id,
        headers={
            "x-worker-reason": reason,
            "x-worker-failed-at": failed_at,
            "x-original-queue": "jobs",
            "x-attempt": 5000,
            "x-delivery-count": 2,
            "x-death": [{"count": 1}],
            "trace": "t",
            **headers,
        },
    )
    return (props, f'{{"id": "{message_id}"}}'.encode())


@pytest.fixture
def channel():
    return QueueChannel(
        {
            "jobs": [],
            "jobs.dlq": [
                dead("a1", "invalid message: header x-attempt must be between 1 and 1000", "2026-11-25T10:00:02+00:00"),
                dead("b1", "unknown account: 42", "2026-11-25T09:00:00+00:00"),
                dead("a2", "invalid message: header x-attempt must be between 1 and 1000", "2026-11-25T11:00:00+00:00"),
                (pika.BasicProperties(message_id="c1", headers={"x-death": []}), b'{"id": "c1"}'),
            ],
        }
    )


def ids(channel, queue):
    return [props.message_id for props, _ in channel.queues[queue]]


def test_summary_counts_per_reason_and_removes_nothing(cfg, channel):
    summary = dlq.summarise(channel, cfg).as_dict()
    assert summary == {
        "total": 4,
        "oldest": "2026-11-25T09:00:00+00:00",
        "newest": "2026-11-25T11:00:00+00:00",
        "max_delivery_count": 2,
        "reasons": {
            "invalid message: header x-attempt must be between 1 and 1000": 2,
            "unknown account: 42": 1,
            "(no reason: dead-lettered by the broker)": 1,
        },
    }
    assert ids(channel, "jobs.dlq") == ["a1", "b1", "a2", "c1"]  # all back, in order
    assert not channel.unacked and {p[:2] for p in channel.published} == {("", "jobs.dlq")}
    kept = channel.queues["jobs.dlq"][0][0].headers
    assert "x-delivery-count" not in kept  # never given back: the broker's count does not grow
    assert kept["x-worker-reason"].startswith("invalid message") and kept["x-death"] == [{"count": 1}]


@pytest.mark.parametrize(
    ("select", "moved"),
    [
        (dlq.Selector(reason="x-attempt"), ["a1", "a2"]),
        (dlq.Selector(message_ids=frozenset({"b1"})), ["b1"]),
        (dlq.Selector(message_id_prefix="a"), ["a1", "a2"]),
        (dlq.Selector(everything=True), ["a1", "b1", "a2", "c1"]),
    ],
)
def test_replay_moves_the_selected_ones_with_the_counters_reset(cfg, channel, select, moved):
    assert dlq.replay(channel, cfg, select) == (len(moved), 4 - len(moved))
    assert ids(channel, "jobs") == moved
    assert sorted(ids(channel, "jobs.dlq")) == sorted({"a1", "b1", "a2", "c1"} - set(moved))
    for props, body in channel.queues["jobs"]:
        assert set(props.headers or {}) <= {"trace"}
        assert props.delivery_mode == 2 and body.startswith(b'{"id"')
    assert not channel.unacked


def test_replay_dry_run_moves_nothing(cfg, channel):
    assert dlq.replay(channel, cfg, dlq.Selector(reason="x-attempt"), dry_run=True) == (2, 2)
    assert ids(channel, "jobs.dlq") == ["a1", "b1", "a2", "c1"] and ids(channel, "jobs") == []


def test_a_refused_copy_leaves_the_dead_letter_in_place(cfg, channel):
    channel.refuse_publish = True
    with pytest.raises(pika.exceptions.NackError):
        dlq.replay(channel, cfg, dlq.Selector(everything=True))
    assert ids(channel, "jobs.dlq") == ["a1", "b1", "a2", "c1"]
    assert ids(channel, "jobs") == []


def test_replay_needs_a_selection(env, capsys):
    with pytest.raises(SystemExit):
        dlq.main(["replay"], env)
    assert "needs --reason" in capsys.readouterr().err


def test_config_error_exits_78(capsys):
    assert dlq.main(["summary"], {}) == dlq.EXIT_CONFIG
