"""One connection's Session: which frames it sends for a batch's instructions."""

from __future__ import annotations

import logging

import pika
import pika.exceptions
import pytest

from account_worker.config import load_config
from account_worker.decisions import Ack, DeadLetter, DeadLetterKind, Requeue, Retry
from account_worker.delivery import Delivery, Instruction
from account_worker.session import Session
from fakes import Method, RecordingConnection

LOG = logging.getLogger("account_worker")


@pytest.fixture
def cfg(env):
    return load_config({**env, "WORKER_APIKEY": "k3y"})


def open_session(cfg) -> tuple[Session, RecordingConnection]:
    conn = RecordingConnection()
    session = Session(conn, cfg, LOG, cfg.secrets())
    conn.ch.calls.clear()  # the channel setup is not what these tests look at
    return session, conn


_RECEIVED: dict[Session, list[Delivery]] = {}


def received(session: Session, tag: int, **changes) -> Delivery:
    """A delivery received through the session's consumer callback (so the session counts it unsettled)."""
    got: list[Delivery] = _RECEIVED.setdefault(session, [])
    session.consume(lambda delivery: got.append(delivery) or True)
    channel = session._channel  # the RecordingChannel: its basic_consume call holds the callback
    callback = next(kw["on_message_callback"] for name, kw in channel.calls if name == "basic_consume")
    callback(channel, Method(tag), pika.BasicProperties(message_id=f"m{tag}", **changes), b"{}")
    return got[-1]


def frames(conn: RecordingConnection) -> list[tuple]:
    out = []
    for name, kwargs in conn.ch.calls:
        if name == "basic_ack":
            out.append(("ack", kwargs["delivery_tag"], kwargs.get("multiple", False)))
        elif name == "basic_nack":
            out.append(("nack", kwargs["delivery_tag"], kwargs["requeue"]))
        elif name == "basic_publish":
            out.append(("publish", kwargs["exchange"], kwargs["routing_key"]))
    return out


def test_channel_is_opened_in_confirm_mode_with_the_prefetch(cfg):
    conn = RecordingConnection()
    Session(conn, cfg, LOG)
    assert [name for name, _ in conn.ch.calls] == ["confirm_delivery", "basic_qos"]
    assert conn.ch.calls[1][1] == {"prefetch_count": 200}


def test_runs_of_acks_are_acked_with_one_multiple_frame_in_order(cfg):
    session, conn = open_session(cfg)
    d = [received(session, tag) for tag in range(1, 6)]
    conn.ch.calls.clear()
    session.settle(
        [
            Instruction(d[0], Ack()),
            Instruction(d[1], Ack()),
            Instruction(d[2], Retry(2, 1500, "action failed: x")),
            Instruction(d[3], Ack()),
            Instruction(d[4], Ack()),
        ]
    )
    assert frames(conn) == [
        ("ack", 2, True),
        ("publish", "", "jobs.retry"),
        ("ack", 3, False),
        ("ack", 5, True),
    ]


def test_dead_letter_is_published_with_redacted_reason_then_acked(cfg):
    session, conn = open_session(cfg)
    delivery = received(session, 1)
    conn.ch.calls.clear()
    session.settle(
        [Instruction(delivery, DeadLetter(DeadLetterKind.ACTION_FAILED, "action failed: apikey k3y refused"))]
    )
    assert frames(conn) == [("publish", "jobs.dlx", "jobs"), ("ack", 1, False)]
    assert conn.ch.calls[0][1]["properties"].headers["x-worker-reason"] == "action failed: apikey *** refused"


def test_requeue_gives_the_message_back_as_a_new_one(cfg):
    """Not a nack: that would raise x-delivery-count, which the crash-loop guard reads."""
    session, conn = open_session(cfg)
    delivery = received(session, 1, headers={"x-delivery-count": 1, "trace": "t"})
    conn.ch.calls.clear()
    session.settle([Instruction(delivery, Requeue("database unavailable"))])
    assert frames(conn) == [("publish", "", "jobs"), ("ack", 1, False)]
    copy = conn.ch.calls[0][1]["properties"]
    assert copy.message_id == "m1" and copy.headers == {"trace": "t"}


def test_a_refused_give_back_is_a_nack_with_requeue(cfg):
    session, conn = open_session(cfg)
    delivery = received(session, 1)

    def refuse(**kwargs):
        raise pika.exceptions.NackError([])

    conn.ch.basic_publish = refuse
    conn.ch.calls.clear()
    session.settle([Instruction(delivery, Requeue("database unavailable"))])
    assert frames(conn) == [("nack", 1, True)]


def test_refused_publish_requeues_instead_of_acking(cfg):
    session, conn = open_session(cfg)
    delivery = received(session, 1)

    def refuse(**kwargs):
        raise pika.exceptions.NackError([])

    conn.ch.basic_publish = refuse
    conn.ch.calls.clear()
    session.settle([Instruction(delivery, Retry(2, 10, "transient failure: x"))])
    assert frames(conn) == [("nack", 1, True)]


def test_reply_is_published_before_the_ack(cfg):
    session, conn = open_session(cfg)
    delivery = received(session, 1, reply_to="replies", correlation_id="c1")
    conn.ch.calls.clear()
    reply = {"account_uuid": "u", "host": "h", "status": "done", "message_id": "m1"}
    session.settle([Instruction(delivery, Ack(), reply)])
    assert frames(conn) == [("publish", "", "replies"), ("ack", 1, True)]


def test_delivery_from_a_dropped_connection_is_never_settled_on_the_new_one(cfg, caplog):
    caplog.set_level(logging.DEBUG, logger="account_worker")
    old, _ = open_session(cfg)
    stale = received(old, 1)
    new, conn = open_session(cfg)
    fresh = received(new, 1)  # the same tag number on the new channel
    conn.ch.calls.clear()
    new.settle(
        [
            Instruction(stale, Ack()),
            Instruction(stale, DeadLetter(DeadLetterKind.ACTION_FAILED, "x")),
            Instruction(fresh, Requeue("r")),
        ]
    )
    new.requeue([stale])
    assert frames(conn) == [("publish", "", "jobs"), ("ack", 1, False)]  # only the new channel's own delivery
    assert [r.getMessage() for r in caplog.records].count("stale_delivery_dropped") == 2
    assert new.owns(fresh) and not new.owns(stale)


def test_consumed_deliveries_carry_their_session(cfg):
    session, conn = open_session(cfg)
    taken: list[Delivery] = []
    session.consume(lambda delivery: taken.append(delivery) is None)
    session._on_message(conn.ch, Method(3, redelivered=True), pika.BasicProperties(message_id="m3"), b"{}")
    (delivery,) = taken
    assert delivery.source is session and session.owns(delivery)
    assert (delivery.tag, delivery.message_id, delivery.redelivered) == (3, "m3", True)
    assert frames(conn) == []


def test_refused_delivery_is_requeued_by_the_session(cfg):
    session, conn = open_session(cfg)
    session.consume(lambda delivery: False)
    session._on_message(conn.ch, Method(7), pika.BasicProperties(message_id="m7"), b"{}")
    assert frames(conn) == [("publish", "", "jobs"), ("ack", 7, False)]


def test_consume_and_cancel_are_idempotent(cfg):
    session, conn = open_session(cfg)
    session.consume(lambda delivery: True)
    session.consume(lambda delivery: True)
    session.cancel("shutdown")
    session.cancel("shutdown")
    assert [name for name, _ in conn.ch.calls] == ["basic_consume", "basic_cancel"]
