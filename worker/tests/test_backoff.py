from __future__ import annotations

import pytest

from account_worker.backoff import backoff_delay


def test_grows_exponentially_until_cap():
    top = [backoff_delay(n, base=0.5, cap=30.0, random=lambda: 0.999999) for n in range(12)]
    assert top[0] == pytest.approx(0.5, rel=1e-3)
    assert top[1] == pytest.approx(1.0, rel=1e-3)
    assert top[5] == pytest.approx(16.0, rel=1e-3)
    assert all(d <= 30.0 for d in top)
    assert top[-1] == pytest.approx(30.0, rel=1e-3)


def test_full_jitter_is_deterministic_with_injected_random():
    assert backoff_delay(3, base=1.0, cap=100.0, random=lambda: 0.25) == 2.0
    assert backoff_delay(3, base=1.0, cap=100.0, random=lambda: 0.0) == 0.0


def test_huge_attempt_does_not_overflow():
    assert backoff_delay(10_000, base=1.0, cap=7.0, random=lambda: 0.5) == 3.5


def test_negative_attempt_rejected():
    with pytest.raises(ValueError):
        backoff_delay(-1, random=lambda: 0.5)
