"""Poison isolation: a failed call is narrowed by halves down to the items that fail it.

A batch is a bulkhead, never a shared fate.  When a call on a batch's values (the host
look-up, the earlier-run look-up, the INSERT of the runs) fails other than by an outage,
narrow() repeats it on halves of its input until each failing item is alone; only those
items' messages are dead-lettered, the others go on.  A clean call costs one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from account_worker.errors import DatabaseUnavailable, RecordRejected

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
