"""The action of bench/ssh_throughput.py (c): 100 ms of waiting and nothing else, so that the
worker's throughput shows its concurrency bound (WORKER_ACTION=sleep_action:sleep_100ms, with
bench/ on the worker's PYTHONPATH)."""

from __future__ import annotations

import time

SECONDS = 0.1


def sleep_100ms(job: object, host: str) -> str:
    time.sleep(SECONDS)
    return "done"
