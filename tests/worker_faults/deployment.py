"""Where the deployed worker, its broker and its database are (the IT_* environment).

Environment (set by molecule/worker/verify.yml):
    IT_AMQP_URL        app user's URL of the broker (published on 127.0.0.1)
    IT_DATABASE_URL    the worker's database (published on 127.0.0.1)
    IT_DB_HOST         container running PostgreSQL (stopped/started by a test)
    IT_WORKER_HOSTS    containers running the worker (comma-separated)
    IT_WORKER_NAME     runit service prefix (account-worker)
    IT_ACCOUNTS        account_uuid=host pairs seeded in the database
    IT_ACCOUNT_HOSTS   containers the ssh action runs commands on (sshd, role account_host)
    IT_SSH_USER        the user the workers log in as there
    IT_BROKER_HOST     container running RabbitMQ (its queues are read with rabbitmqctl)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

REQUIRED = ("IT_AMQP_URL", "IT_DATABASE_URL", "IT_DB_HOST", "IT_WORKER_HOSTS")


@dataclass
class Env:
    amqp_url: str
    database_url: str
    db_host: str
    worker_hosts: list[str]
    worker_name: str
    accounts: dict[str, str]
    account_hosts: list[str] = field(default_factory=list)
    ssh_user: str = "account-jobs"
    broker_host: str = ""
    results: list[dict] = field(default_factory=list)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Env:
        pairs = [p.split("=", 1) for p in environ.get("IT_ACCOUNTS", "").split(",") if "=" in p]
        return cls(
            amqp_url=environ["IT_AMQP_URL"],
            database_url=environ["IT_DATABASE_URL"],
            db_host=environ["IT_DB_HOST"],
            worker_hosts=environ["IT_WORKER_HOSTS"].split(","),
            worker_name=environ.get("IT_WORKER_NAME", "account-worker"),
            accounts=dict(pairs),
            account_hosts=[h for h in environ.get("IT_ACCOUNT_HOSTS", "").split(",") if h],
            ssh_user=environ.get("IT_SSH_USER", "account-jobs"),
            broker_host=environ.get("IT_BROKER_HOST", ""),
        )


def missing(environ: Mapping[str, str] = os.environ) -> list[str]:
    return [v for v in REQUIRED if not environ.get(v)]
