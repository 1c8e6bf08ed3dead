"""Live fault tests of the deployed worker, through the real broker and database (see deployment.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployment import Env, missing
from support.jobs import JobPublisher
from support.reports import REPORTS, read_report, write_report

REPORT = REPORTS / "worker-faults.json"
COLUMNS = ("test", "sent", "recorded", "duplicates", "dead_lettered")


@pytest.fixture(scope="session")
def env() -> Iterator[Env]:
    if absent := missing():
        pytest.fail(f"worker fault test environment not set: {', '.join(absent)}", pytrace=False)
    e = Env.from_environ()
    yield e
    write_report(REPORT, e.results)


def pytest_terminal_summary(terminalreporter) -> None:
    results = read_report(REPORT)
    if results is not None:
        terminalreporter.write_line("fault test                 sent  recorded  duplicates  dead-lettered")
        for r in results:
            terminalreporter.write_line(
                f"{r['test']:<26} {r['sent']:>4}  {r['recorded']:>8}  {r['duplicates']:>10}  {r['dead_lettered']:>13}"
            )
            extra = {k: v for k, v in r.items() if k not in COLUMNS}
            if extra:
                terminalreporter.write_line("    " + ", ".join(f"{k}={v}" for k, v in extra.items()))


@pytest.fixture
def publisher(env: Env) -> Iterator[JobPublisher]:
    p = JobPublisher(env.amqp_url, connection_name="bundle-worker-faults", apikey="it")
    yield p
    p.close()
