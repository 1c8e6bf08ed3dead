"""After playbooks/migrate.yml (Molecule scenario `migrate`): nothing lost, nothing twice, blue
left empty, the worker on green, and blue's users, vhosts, policies and queues on green.

Environment: MIGRATE_RESULT (the publisher's OUT.json), MIGRATE_DATABASE_URL,
MIGRATE_BLUE_API / MIGRATE_GREEN_API (management APIs), MIGRATE_ADMIN_USER /
MIGRATE_ADMIN_PASSWORD, MIGRATE_GREEN_URL (the application user's AMQP URL on green),
MIGRATE_LEGACY_PASSWORD (the user made on blue only), MIGRATE_REPORT (where the numbers go).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pika
import psycopg
import pytest

from support.db import wait_recorded

ENV = os.environ
RESULT = json.loads(Path(ENV["MIGRATE_RESULT"]).read_text())


def api(base: str, path: str, user: str | None = None, password: str | None = None) -> Any:
    request = urllib.request.Request(f"{base}/{path}")
    creds = f"{user or ENV['MIGRATE_ADMIN_USER']}:{password or ENV['MIGRATE_ADMIN_PASSWORD']}"
    request.add_header("Authorization", "Basic " + b64encode(creds.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def settled(read: Any, deadline_s: float = 60.0, done: Any = lambda value: not value) -> Any:
    """The management API's queue figures are sampled every few seconds: poll until done (by default:
    zero, empty) or the deadline; the last value read."""
    end = time.monotonic() + deadline_s
    value = read()
    while not done(value) and time.monotonic() < end:
        time.sleep(2)
        value = read()
    return value


def test_every_confirmed_job_is_recorded_exactly_once() -> None:
    confirmed = RESULT["blue"] + RESULT["green"]
    assert RESULT["blue"] > 0 and RESULT["green"] > 0, RESULT
    got = wait_recorded(ENV["MIGRATE_DATABASE_URL"], RESULT["prefix"], confirmed, deadline_s=180)
    with psycopg.connect(ENV["MIGRATE_DATABASE_URL"]) as db:
        rows = db.execute(
            "SELECT message_id, created_at FROM job_runs WHERE message_id LIKE %s ORDER BY created_at",
            (RESULT["prefix"] + "%",),
        ).fetchall()
    recorded = {row[0] for row in rows}
    gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(rows)]
    report = {
        "published_blue": RESULT["blue"],
        "published_green": RESULT["green"],
        "unconfirmed": len(RESULT["unconfirmed"]),
        "recorded": got.distinct,
        "duplicates": got.duplicates,
        "lost": len(set(RESULT["ids"]) - recorded),
        "longest_gap_between_records_s": round(max(gaps, default=0.0), 2),
    }
    Path(ENV["MIGRATE_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    assert set(RESULT["ids"]) <= recorded, f"confirmed but never recorded: {sorted(set(RESULT['ids']) - recorded)[:10]}"
    assert got.duplicates == 0


def _with_messages(base: str) -> list[str]:
    queues = api(base, "queues?columns=vhost,name,messages")
    return [f"{q['vhost']}/{q['name']}={q.get('messages')}" for q in queues if q.get("messages")]


def test_nothing_is_left_on_blue() -> None:
    assert settled(lambda: _with_messages(ENV["MIGRATE_BLUE_API"])) == []


def test_the_dead_letter_queues_are_empty() -> None:
    dlqs = lambda: [q for q in _with_messages(ENV["MIGRATE_GREEN_API"]) if ".dlq=" in q]  # noqa: E731
    assert settled(dlqs) == []


def test_no_shovel_is_left_on_blue() -> None:
    assert api(ENV["MIGRATE_BLUE_API"], "parameters/shovel") == []


def _workers(base: str) -> list[str]:
    names = [(c.get("client_properties") or {}).get("connection_name", "") for c in api(base, "connections")]
    return [n for n in names if n.startswith("account-worker@")]


def test_the_worker_consumes_from_green_only() -> None:
    assert _workers(ENV["MIGRATE_BLUE_API"]) == []
    assert _workers(ENV["MIGRATE_GREEN_API"]), "no worker connected to green"
    # Sampled like the message counts: a worker that moved a few seconds ago may not show yet.
    consumers = settled(lambda: api(ENV["MIGRATE_GREEN_API"], "queues/app/jobs").get("consumers") or 0, done=bool)
    assert consumers >= 1
    # Green serves AMQPS in this scenario: the worker moved to it over TLS (the shovels did too, or no message
    # of blue's would be on green).
    tls = [c.get("ssl") for c in api(ENV["MIGRATE_GREEN_API"], "connections")
           if (c.get("client_properties") or {}).get("connection_name", "").startswith("account-worker@")]  # fmt: skip
    assert tls and all(tls), f"the worker's connections to green, TLS or not: {tls}"


def test_the_admin_logs_in_to_green() -> None:
    assert "administrator" in str(api(ENV["MIGRATE_GREEN_API"], "whoami")["tags"])


@pytest.mark.parametrize("user", ["app", "legacy"])
def test_users_log_in_to_green_with_their_old_passwords(user: str) -> None:
    green = urllib.parse.urlsplit(ENV["MIGRATE_GREEN_URL"])
    password = green.password if user == "app" else ENV["MIGRATE_LEGACY_PASSWORD"]
    vhost = "app" if user == "app" else "reports"
    params = pika.ConnectionParameters(
        host=green.hostname, port=green.port, virtual_host=vhost, credentials=pika.PlainCredentials(user, password)
    )
    conn = pika.BlockingConnection(params)
    conn.close()


def test_blue_only_definitions_are_on_green() -> None:
    green = ENV["MIGRATE_GREEN_API"]
    assert "reports" in [v["name"] for v in api(green, "vhosts")]
    perms = api(green, "users/legacy/permissions")
    assert {"vhost": "reports", "configure": ".*", "write": ".*", "read": ".*"} in [
        {k: p[k] for k in ("vhost", "configure", "write", "read")} for p in perms
    ]
    assert api(green, "policies/reports/reports-ttl")["definition"] == {"message-ttl": 3600000}
    assert api(green, "queues/reports/reports.daily")["type"] == "quorum"
    # A classic queue blue mirrored: RabbitMQ 4 has no mirroring, green holds it as a quorum queue.
    assert api(green, "queues/reports/mirrored.orders")["type"] == "quorum"
    with pytest.raises(urllib.error.HTTPError):
        api(green, "policies/reports/reports-ha")


def test_messages_of_other_vhosts_moved_too() -> None:
    green = ENV["MIGRATE_GREEN_API"]
    moved = settled(lambda: 5 - int(api(green, "queues/reports/reports.daily").get("messages") or 0))
    assert moved == 0, "reports.daily on green does not hold the 5 messages blue had"
