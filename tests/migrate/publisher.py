"""Publisher of the migrate scenario: confirmed jobs to blue while the worker still consumes
there, then to green, as a client re-pointed during a blue-green move would.

    python tests/migrate/publisher.py OUT.json   (settings in the environment, see below)

MIGRATE_BLUE_URL / MIGRATE_GREEN_URL: AMQP URLs of the application user on each broker;
MIGRATE_BLUE_API: blue's management API (http://host:port/api), MIGRATE_ADMIN_USER and
MIGRATE_ADMIN_PASSWORD to read it; MIGRATE_PREFIX: the jobs' message_id prefix;
MIGRATE_ACCOUNT: the account uuid of the jobs. Publishes to blue until no worker consumes
there any more (at least MIGRATE_MIN_BLUE jobs, at most MIGRATE_MAX_BLUE), then
MIGRATE_GREEN_JOBS jobs to green, at most MIGRATE_RATE per second. Only the jobs the broker
confirmed are counted; OUT.json gets {"prefix", "blue", "green", "ids", "unconfirmed"}.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from base64 import b64encode
from pathlib import Path

import pika.exceptions

from support.jobs import JobPublisher


def _workers_on_blue(api: str, user: str, password: str) -> int:
    request = urllib.request.Request(f"{api}/connections?columns=client_properties")
    request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        connections = json.load(answer)
    names = [(c.get("client_properties") or {}).get("connection_name", "") for c in connections]
    return sum(1 for name in names if name.startswith("account-worker@"))


def main(out: Path) -> int:
    env = os.environ
    prefix, account, rate = env["MIGRATE_PREFIX"], env["MIGRATE_ACCOUNT"], float(env.get("MIGRATE_RATE", "20"))
    min_blue, max_blue = int(env.get("MIGRATE_MIN_BLUE", "100")), int(env.get("MIGRATE_MAX_BLUE", "400"))
    green_jobs = int(env.get("MIGRATE_GREEN_JOBS", "100"))
    counts = {"blue": 0, "green": 0}
    ids: list[str] = []
    unconfirmed: list[str] = []

    def run(side: str, url: str, done: object) -> None:
        publisher = JobPublisher(url, connection_name=f"migrate-publisher-{side}", apikey="migrate")
        try:
            n = 0
            while not done(n):  # type: ignore[operator]
                message_id = f"{prefix}{side}-{n:05d}"
                try:
                    publisher.job(message_id, account)
                    ids.append(message_id)
                    counts[side] += 1
                except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                    unconfirmed.append(message_id)
                n += 1
                time.sleep(1.0 / rate)
        finally:
            publisher.close()

    api, user, password = env["MIGRATE_BLUE_API"], env["MIGRATE_ADMIN_USER"], env["MIGRATE_ADMIN_PASSWORD"]

    def blue_done(n: int) -> bool:
        if n >= max_blue:
            return True
        return n >= min_blue and n % 10 == 0 and _workers_on_blue(api, user, password) == 0

    run("blue", env["MIGRATE_BLUE_URL"], blue_done)
    run("green", env["MIGRATE_GREEN_URL"], lambda n: n >= green_jobs)
    out.write_text(json.dumps({"prefix": prefix, **counts, "ids": ids, "unconfirmed": unconfirmed}))
    print(json.dumps({**counts, "unconfirmed": len(unconfirmed)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
