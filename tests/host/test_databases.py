"""Host checks of the sandbox database (role postgresql_sandbox)."""

from __future__ import annotations


def test_postgresql_running(host) -> None:
    assert host.service("postgresql").is_running
    assert host.socket("tcp://0.0.0.0:5432").is_listening


def test_schema_and_accounts(host) -> None:
    out = host.check_output(
        "runuser -u postgres -- psql -d accounts -tAc "
        "\"SELECT (SELECT count(*) FROM accounts), to_regclass('job_runs') IS NOT NULL, "
        "(SELECT tableowner FROM pg_tables WHERE tablename = 'job_runs')\""
    )
    accounts, has_runs, owner = out.split("|")
    assert int(accounts) >= 1
    assert has_runs == "t"
    assert owner == "worker"


def test_job_runs_are_unique_per_message(host) -> None:
    out = host.check_output(
        "runuser -u postgres -- psql -d accounts -tAc "
        "\"SELECT count(*) FROM pg_indexes WHERE tablename = 'job_runs' AND indexdef LIKE '%UNIQUE%message_id%'\""
    )
    assert int(out) == 1
