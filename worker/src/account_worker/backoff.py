"""Capped exponential backoff with full jitter."""

from __future__ import annotations

from collections.abc import Callable


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, random: Callable[[], float]) -> float:
    """Seconds to wait before retry number `attempt` (0-based): uniform in [0, min(cap, base*2**attempt)).

    `random` returns a float in [0, 1); inject a fixed one in tests.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = cap if attempt >= 64 else min(cap, base * (2**attempt))
    return ceiling * random()
