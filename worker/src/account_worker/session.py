"""One AMQP connection and its channel: all the state that dies with the connection.

A Session is created when a connection is established and dropped when that connection
is lost or closed; none of its fields is ever reset by hand.  Every delivery it receives
carries the session itself as its `source`, and a session settles only deliveries whose
source it is.  A result for a delivery from an older connection or channel therefore
meets a different session and is dropped: its dead tag cannot be acked on the new
channel, by construction (the broker redelivers the message; job_runs deduplicates it).

I/O thread only (pika is not thread-safe), except wake(), which goes through
add_callback_threadsafe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, assert_never

from account_worker import amqp
from account_worker.config import Config
from account_worker.decisions import Ack, DeadLetter, Requeue, Retry
from account_worker.delivery import Delivery, Instruction
from account_worker.logsetup import log_event
from account_worker.observe import NO_OBSERVER, Observer
from account_worker.redact import redact

# How the observer sees deliveries returned to the queue other than by a Requeue decision.
GIVEN_BACK = Requeue("given back to the queue")
REPUBLISH_FAILED = Requeue("republish failed; nacked with requeue")


class Session:
    def __init__(
        self,
        conn: Any,
        cfg: Config,
        log: logging.Logger,
        secrets: Sequence[str] = (),
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """Open a confirm-mode channel on `conn`, declare the topology if asked, set the prefetch."""
        channel = conn.channel()
        channel.confirm_delivery()
        if cfg.declare_topology:
            amqp.declare_topology(channel, cfg)
        channel.basic_qos(prefetch_count=cfg.prefetch)
        self._conn = conn
        self._channel = channel
        self._cfg = cfg
        self._log = log
        self._secrets = tuple(secrets)
        self._observer = observer
        self._consumer_tag: str | None = None
        self._unsettled: set[int] = set()  # tags delivered on this channel and not yet acked or nacked
        self._on_delivery: Callable[[Delivery], bool] = lambda delivery: False

    def owns(self, delivery: Delivery) -> bool:
        """True if the delivery arrived on this session's channel (its tag means something here)."""
        return delivery.source is self

    # ------------------------------------------------------------------ connection

    def pump(self, seconds: float) -> None:
        """Run pika's I/O (heartbeats, deliveries, callbacks from other threads) for up to `seconds`."""
        self._conn.process_data_events(time_limit=seconds)

    def wake(self, callback: Callable[[], None]) -> None:
        """Have the I/O thread run `callback` soon; safe from any thread, a no-op once the connection is gone."""
        # A closed connection raises; the I/O thread drains its inbox on its own anyway.
        with contextlib.suppress(Exception):
            self._conn.add_callback_threadsafe(callback)

    # ------------------------------------------------------------------ consuming

    def consume(self, on_delivery: Callable[[Delivery], bool]) -> None:
        """Start the consumer unless it runs; on_delivery returns False to have a delivery requeued."""
        if self._consumer_tag is not None:
            return
        self._on_delivery = on_delivery
        self._consumer_tag = self._channel.basic_consume(
            queue=self._cfg.queue, on_message_callback=self._on_message, auto_ack=False
        )
        self._observer.consuming(True)
        log_event(self._log, logging.INFO, "consuming", queue=self._cfg.queue, prefetch=self._cfg.prefetch)

    def cancel(self, reason: str) -> None:
        """Cancel the consumer if it runs (pika nacks the messages it has not dispatched)."""
        if self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        self._channel.basic_cancel(tag)
        self._observer.consuming(False)
        log_event(self._log, logging.INFO, "consuming_stopped", reason=reason)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = amqp.delivery_from_pika(method, properties, body, self)
        self._unsettled.add(delivery.tag)
        self._observer.received(delivery)
        if not self._on_delivery(delivery):
            self._give_back(delivery)

    def _give_back(self, delivery: Delivery) -> None:
        """Return a delivery the worker chose not to finish (database away, stopping) to the queue.

        As a confirmed copy at the tail, then ack: a nack with requeue would raise the message's
        x-delivery-count, which the crash-loop guard reads as "in flight when a worker died"; a
        message bounced by every instance through one database outage would look like a crash
        loop.  If the copy is refused, nack with requeue after all.
        """
        try:
            amqp.publish_again(self._channel, self._cfg, delivery)
        except amqp.PUBLISH_ERRORS as exc:
            log_event(self._log, logging.WARNING, "give_back_failed", message_id=delivery.message_id, error=repr(exc))
            self._nack(delivery.tag)
        else:
            self._ack(delivery.tag)
        self._observer.settled(delivery, GIVEN_BACK)

    def _ack(self, tag: int) -> None:
        self._channel.basic_ack(delivery_tag=tag)
        self._unsettled.discard(tag)

    def _nack(self, tag: int) -> None:
        self._channel.basic_nack(delivery_tag=tag, requeue=True)
        self._unsettled.discard(tag)

    def _ack_run(self, tags: list[int]) -> None:
        """Ack a run of tags: one frame with multiple=true when it acks exactly them, else one frame each."""
        top = max(tags)
        if sum(1 for t in self._unsettled if t <= top) == len(tags):
            self._channel.basic_ack(delivery_tag=top, multiple=True)
            self._unsettled.difference_update(tags)
            return
        for tag in tags:
            self._ack(tag)

    # ------------------------------------------------------------------ settling

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give back the deliveries of this session (see _give_back); others are dead tags, the broker has them back."""
        for delivery in deliveries:
            if self.owns(delivery):
                self._give_back(delivery)

    def settle(self, instructions: Sequence[Instruction]) -> None:
        """Carry out a batch's instructions in order, acking runs of Acks with one frame where that is exact.

        The session knows which of its tags are unsettled: basic_ack(multiple=True) on the
        highest tag of a run is used only when it acks exactly that run (the usual case:
        batches are taken in delivery order); otherwise, e.g. when a batch was settled in
        parts out of delivery order, each tag is acked on its own.  Pending acks are flushed
        before any other decision.
        """
        pending: list[int] = []
        for instruction in instructions:
            delivery, decision = instruction.delivery, instruction.decision
            if not self.owns(delivery):
                log_event(self._log, logging.DEBUG, "stale_delivery_dropped", message_id=delivery.message_id)
                continue
            if isinstance(decision, Ack):
                self._reply(instruction)
                pending.append(delivery.tag)
                self._observer.settled(delivery, decision)
                continue
            if pending:
                self._ack_run(pending)
                pending = []
            self._settle_failure(delivery, decision)
        if pending:
            self._ack_run(pending)

    def _settle_failure(self, delivery: Delivery, decision: Retry | DeadLetter | Requeue) -> None:
        channel = self._channel
        match decision:
            case Requeue():
                self._give_back(delivery)
            case Retry(next_attempt=next_attempt, delay_ms=delay_ms):
                self._republish_then_ack(
                    delivery,
                    decision,
                    lambda: amqp.publish_retry(channel, self._cfg, delivery, next_attempt, delay_ms),
                    "job_retry_scheduled",
                    next_attempt=next_attempt,
                    delay_ms=delay_ms,
                )
            case DeadLetter(reason=reason):
                shown = redact(reason, self._secrets)
                self._republish_then_ack(
                    delivery,
                    decision,
                    lambda: amqp.publish_dead_letter(channel, self._cfg, delivery, shown),
                    "job_dead_lettered",
                    reason=shown,
                )
            case _:
                assert_never(decision)

    def _reply(self, instruction: Instruction) -> None:
        delivery = instruction.delivery
        if instruction.reply is not None and delivery.reply_to:
            try:
                amqp.publish_reply(self._channel, delivery, instruction.reply)
            except amqp.PUBLISH_ERRORS as exc:
                log_event(self._log, logging.WARNING, "reply_failed", message_id=delivery.message_id, error=repr(exc))

    def _republish_then_ack(
        self,
        delivery: Delivery,
        decision: Retry | DeadLetter,
        publish: Callable[[], None],
        event: str,
        **fields: Any,
    ) -> None:
        try:
            publish()  # confirm mode: returns once the broker has the copy
        except amqp.PUBLISH_ERRORS as exc:
            log_event(
                self._log,
                logging.ERROR,
                "republish_failed",
                message_id=delivery.message_id,
                intended=event,
                error=repr(exc),
            )
            self._nack(delivery.tag)
            self._observer.settled(delivery, REPUBLISH_FAILED)
            return
        self._ack(delivery.tag)
        self._observer.settled(delivery, decision)
        log_event(self._log, logging.INFO, event, message_id=delivery.message_id, **fields)
