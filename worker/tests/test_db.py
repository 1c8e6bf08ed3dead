from __future__ import annotations

import json
import re

import psycopg
import pytest

from account_worker.db import _INSERT_RUNS, Database, HostCache, schema_sql
from account_worker.errors import DatabaseUnavailable
from account_worker.store import RecordedRun, Run
from fakes import Clock, Connector


def test_host_cache_ttl():
    clock = Clock()
    cache = HostCache(30, clock)
    cache.put_many({"a": "h1", "b": "h2"})
    assert cache.get_many(["a", "b", "c"]) == {"a": "h1", "b": "h2"}
    clock.now += 29.9
    assert cache.get_many(["a"]) == {"a": "h1"}
    clock.now += 0.1
    assert cache.get_many(["a", "b"]) == {}
    assert len(cache) == 0


def test_host_cache_disabled():
    cache = HostCache(0, Clock())
    cache.put_many({"a": "h"})
    assert cache.get_many(["a"]) == {}


def test_host_cache_bounded():
    cache = HostCache(10, Clock(), max_entries=2)
    cache.put_many({"a": "1", "b": "2"})
    cache.put_many({"c": "3"})
    assert len(cache) == 1
    assert cache.get_many(["c"]) == {"c": "3"}


def test_schema_sql_is_package_data():
    sql = schema_sql()
    assert "CREATE TABLE IF NOT EXISTS accounts" in sql
    assert "CREATE TABLE IF NOT EXISTS job_runs" in sql
    assert "message_id text NOT NULL UNIQUE" in sql


# --- Database against a scripted fake psycopg connection (fakes.Connector) ------------


def accounts_responder(sql, params):
    if "FROM accounts" in sql:
        return [(u, f"host-{u}") for u in params[0] if u != "missing"]
    return [(1,)]


def test_lookup_hosts_single_query_and_cache():
    connector = Connector(accounts_responder)
    clock = Clock()
    db = Database("postgresql://x", cache=HostCache(30, clock), connect=connector)
    assert db.lookup_hosts(["a", "b", "missing", "a"]) == {"a": "host-a", "b": "host-b"}
    assert len(connector.conns) == 1
    (query,) = connector.conns[0].log
    assert "FROM accounts WHERE account_uuid = ANY(%s)" in query
    assert connector.kwargs["autocommit"] is True
    assert db.lookup_hosts(["a"]) == {"a": "host-a"}  # served from cache
    assert len(connector.conns[0].log) == 1
    assert db.lookup_hosts([]) == {}


def test_connect_failure_is_database_unavailable_and_redacted():
    connector = Connector(accounts_responder, fail_times=1)
    db = Database("postgresql://x", connect=connector, secrets=["dbpass"])
    with pytest.raises(DatabaseUnavailable) as info:
        db.ping()
    assert "dbpass" not in str(info.value)
    db.ping()  # reconnects on next use
    assert len(connector.conns) == 1


def test_stale_connection_is_retried_once_for_reads():
    calls = {"n": 0}

    def responder(sql, params):
        calls["n"] += 1
        if calls["n"] == 2:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return accounts_responder(sql, params)

    connector = Connector(responder)
    db = Database("postgresql://x", connect=connector)
    db.ping()
    assert db.lookup_hosts(["a"]) == {"a": "host-a"}
    assert len(connector.conns) == 2
    assert connector.conns[0].closed


def test_record_runs_is_one_autocommitted_insert_and_reports_existing_rows():
    def responder(sql, params):
        if sql.lstrip().startswith("INSERT"):
            (payload,) = params  # the batch as one json parameter, each run once, an array per run
            rows = [dict(zip(Run._fields, run, strict=True)) for run in json.loads(payload)]
            assert [r["message_id"] for r in rows] == ["m1", "m2"]
            assert [r["attempts"] for r in rows] == [1, 3]
            assert [(r["exit_status"], r["stdout"], r["stderr"]) for r in rows] == [(0, "up\n", ""), (None, None, None)]
            return [("m1",)]  # second one conflicted: only the inserted ids come back
        if "FROM job_runs" in sql:
            assert params[0] == ["m2"]
            return [("m2", "old-host", "done", None, None, None)]
        raise AssertionError(sql)

    connector = Connector(responder)
    db = Database("postgresql://x", connect=connector)
    runs = [
        Run("m1", "u1", "h1", "done", 1, 0, "up\n", ""),
        Run("m2", "u2", "h2", "done", 3),
        Run("m1", "u1", "h1", "done", 1),
    ]
    assert db.record_runs(runs) == [
        RecordedRun("m1", "h1", "done", False, 0, "up\n", ""),
        RecordedRun("m2", "old-host", "done", True),
    ]
    assert connector.kwargs["autocommit"] is True  # the INSERT commits itself: no BEGIN/COMMIT round trips
    log = connector.conns[0].log
    assert [entry.split(" ", 1)[0] for entry in log] == ["INSERT", "SELECT"]


def test_the_insert_reads_each_run_in_the_order_of_its_fields():
    """The batch's runs travel as JSON arrays: the INSERT's columns and r->>N must follow Run's fields."""
    columns = re.search(r"INSERT INTO job_runs \(([^)]*)\)", _INSERT_RUNS)
    assert columns is not None and tuple(c.strip() for c in columns.group(1).split(",")) == Run._fields
    picked = re.findall(r"r->>(\d+)", _INSERT_RUNS)
    assert [int(i) for i in picked] == list(range(len(Run._fields)))


def test_record_runs_failure_is_database_unavailable_and_not_retried():
    def responder(sql, params):
        raise psycopg.OperationalError("terminating connection")

    connector = Connector(responder)
    db = Database("postgresql://x", connect=connector)
    with pytest.raises(DatabaseUnavailable):
        db.record_runs([Run("m1", "u1", "h1", "done")])
    assert len(connector.conns) == 1  # not retried: the one statement failed, so nothing was committed
    assert connector.conns[0].closed and [e.split(" ", 1)[0] for e in connector.conns[0].log] == ["INSERT"]
