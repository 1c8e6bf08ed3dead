"""Poison isolation: a failed call is narrowed by halves down to the items that fail it.

A batch is a bulkhead, never a shared fate.  When a call on a batch's values (the host
look-up, the earlier-run look-up, the INSERT of the runs) fails other than by an outage,
narrow() repeats it on halves of its input until each failing item is alone; only those
items' messages are dead-lettered, the others go on.  A clean call costs one call.

A message that may crash the worker itself is isolated before anything runs:
split_by_returns() sets apart the deliveries the broker got back unsettled (a worker died
with them in flight), to be processed alone, or not at all once they did it too often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from account_worker.delivery import Delivery
from account_worker.errors import DatabaseUnavailable, RecordRejected
from account_worker.messages import delivery_count

T = TypeVar("T")
R = TypeVar("R")


def narrow(items: Sequence[T], call: Callable[[Sequence[T]], R]) -> tuple[list[R], list[tuple[T, Exception]]]:
    """call(items); if it fails other than DatabaseUnavailable, call it on halves until the culprits are alone.

    Returns the results of the calls that succeeded and each item that fails alone with
    its error.  Free on success (one call).  An error that is not RecordRejected is
    attributed to the items only if some other items succeeded; if everything failed
    with such an error, it is re-raised: that is not the messages' doing.
    """
    results: list[R] = []
    failed: list[tuple[T, Exception]] = []
    pending: list[Sequence[T]] = [items]
    while pending:
        chunk = pending.pop()
        try:
            results.append(call(chunk))
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - narrowed down, then classified below
            if len(chunk) == 1:
                failed.append((chunk[0], exc))
            else:
                half = len(chunk) // 2
                pending.extend((chunk[half:], chunk[:half]))  # popped in order: first half first
    if failed and not results:
        for _, error in failed:
            if not isinstance(error, RecordRejected):
                raise error
    return results, failed


def as_rejected(error: Exception) -> RecordRejected:
    """The error of an item narrow() found failing alone, as the record rejection it is dead-lettered for."""
    if isinstance(error, RecordRejected):
        return error
    return RecordRejected(f"{type(error).__name__}: {error}")


def split_by_returns(
    deliveries: Sequence[Delivery], crash_limit: int
) -> tuple[list[tuple[Delivery, int]], list[list[Delivery]]]:
    """A batch split by how often the broker got each delivery back unsettled (x-delivery-count).

    Returns the deliveries that came back `crash_limit` times or more, with that count (to
    dead-letter unprocessed), and the groups to process one after the other: every delivery
    seen for the first time together, then each one that came back fewer times alone,
    fewest returns first.
    """
    crashed: list[tuple[Delivery, int]] = []
    clean: list[Delivery] = []
    suspects: list[tuple[int, Delivery]] = []
    for delivery in deliveries:
        returned = delivery_count(delivery.headers)
        if returned >= crash_limit:
            crashed.append((delivery, returned))
        elif returned:
            suspects.append((returned, delivery))
        else:
            clean.append(delivery)
    groups = ([clean] if clean else []) + [[d] for _, d in sorted(suspects, key=lambda item: item[0])]
    return crashed, groups
