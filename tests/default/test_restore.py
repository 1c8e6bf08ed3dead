"""After the restore drill (molecule/default/backup_drill.yml): a broker reset to empty and given back
its definitions export has the same definitions as before, and the users the role made log in with
their passwords, with the same rights.

Environment: BACKUP_BEFORE / BACKUP_AFTER (`rabbitmqctl export_definitions -` before the reset and
after the import), BACKUP_AMQP_HOST / BACKUP_AMQP_PORT (AMQPS), BACKUP_MANAGEMENT_PORT (HTTPS),
BACKUP_CA_FILE, BACKUP_CLIENT_CERT / BACKUP_CLIENT_KEY (mutual TLS; may be empty), BACKUP_VHOST,
BACKUP_APP_USER / BACKUP_APP_PASSWORD, BACKUP_ADMIN_USER / BACKUP_ADMIN_PASSWORD.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

ENV = os.environ
BEFORE = json.loads(Path(ENV["BACKUP_BEFORE"]).read_text())
AFTER = json.loads(Path(ENV["BACKUP_AFTER"]).read_text())
# What differs between two exports of the same definitions: the versions, and the cluster's own id
# (a reset node gets a new one).
VOLATILE_KEYS = {"rabbit_version", "rabbitmq_version", "product_name", "product_version"}
VOLATILE_GLOBALS = {"internal_cluster_id"}


def canonical(value: Any) -> Any:
    """The same definition however RabbitMQ wrote it: a list of [key, value] pairs (how 3.10 and 4.0 export a
    vhost's limits, in no fixed order, and an operator policy set through the HTTP API) becomes a dictionary,
    as the same things are exported after an import."""
    if isinstance(value, list) and value and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                                 for p in value):  # fmt: skip
        return {key: canonical(item) for key, item in value}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    return value


def snapshot(definitions: dict[str, Any]) -> dict[str, list[str]]:
    """Every definition as a sorted list of canonical JSON lines, per kind."""
    out: dict[str, list[str]] = {}
    for kind, items in definitions.items():
        if kind in VOLATILE_KEYS:
            continue
        kept = [i for i in items if kind != "global_parameters" or i.get("name") not in VOLATILE_GLOBALS]
        out[kind] = sorted(json.dumps(canonical(item), sort_keys=True) for item in kept)
    return out


def ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ENV["BACKUP_CA_FILE"])
    if ENV.get("BACKUP_CLIENT_CERT"):
        context.load_cert_chain(ENV["BACKUP_CLIENT_CERT"], ENV["BACKUP_CLIENT_KEY"])
    return context


def amqp(user: str, password: str, vhost: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        host=ENV["BACKUP_AMQP_HOST"],
        port=int(ENV["BACKUP_AMQP_PORT"]),
        virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        ssl_options=pika.SSLOptions(ssl_context(), server_hostname=ENV["BACKUP_AMQP_HOST"]),
    )
    return pika.BlockingConnection(params)


def api(path: str, user: str, password: str) -> Any:
    url = f"https://{ENV['BACKUP_AMQP_HOST']}:{ENV['BACKUP_MANAGEMENT_PORT']}/api/{path}"
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10, context=ssl_context()) as answer:
        return json.load(answer)


APP = (ENV["BACKUP_APP_USER"], ENV["BACKUP_APP_PASSWORD"])
ADMIN = (ENV["BACKUP_ADMIN_USER"], ENV["BACKUP_ADMIN_PASSWORD"])
VHOST = ENV["BACKUP_VHOST"]


def test_the_export_before_the_reset_held_the_application_definitions() -> None:
    # The comparison below means something only if there was something to lose.
    assert VHOST in {v["name"] for v in BEFORE["vhosts"]}
    assert {APP[0], ADMIN[0]} <= {u["name"] for u in BEFORE["users"]}
    assert BEFORE["queues"] and BEFORE["policies"] and BEFORE["permissions"]


@pytest.mark.parametrize("kind", sorted(set(snapshot(BEFORE)) | set(snapshot(AFTER))))
def test_the_restored_definitions_equal_those_before_the_reset(kind: str) -> None:
    before, after = snapshot(BEFORE).get(kind, []), snapshot(AFTER).get(kind, [])
    assert after == before, {"lost": sorted(set(before) - set(after)), "new": sorted(set(after) - set(before))}


@pytest.mark.parametrize("who", [APP, ADMIN], ids=["app", "admin"])
def test_the_users_log_in_with_their_passwords_where_their_tags_let_them(who: tuple[str, str]) -> None:
    # The HTTP API takes a user with a management-class tag (the admin); the others (the app) are
    # refused there, as before the reset. Over AMQPS both log in.
    tags = next(u["tags"] for u in BEFORE["users"] if u["name"] == who[0])
    tags = tags.split(",") if isinstance(tags, str) else tags
    if {"administrator", "monitoring", "policymaker", "management"} & set(tags):
        assert api("whoami", *who)["name"] == who[0]
    else:
        with pytest.raises(urllib.error.HTTPError) as refused:
            api("whoami", *who)
        assert refused.value.code == 401
    vhost = VHOST if who == APP else "/"
    with amqp(*who, vhost) as connection:
        assert connection.is_open


def test_a_wrong_password_is_still_refused() -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        api("whoami", ADMIN[0], ADMIN[1] + "x")
    assert refused.value.code == 401


def test_the_admin_sees_the_restored_vhost_queues_and_policies() -> None:
    queues = api(f"queues/{urllib.parse.quote(VHOST, safe='')}", *ADMIN)
    before = {q["name"]: q for q in BEFORE["queues"] if q["vhost"] == VHOST}
    assert {q["name"]: (q["durable"], q["type"]) for q in queues} == {
        name: (q["durable"], q["arguments"].get("x-queue-type", "classic")) for name, q in before.items()
    }
    policies = api(f"policies/{urllib.parse.quote(VHOST, safe='')}", *ADMIN)
    assert sorted(p["name"] for p in policies) == sorted(p["name"] for p in BEFORE["policies"] if p["vhost"] == VHOST)


def test_the_app_user_publishes_and_consumes_over_amqps_with_its_password() -> None:
    body = f"restore-drill-{uuid.uuid4()}".encode()
    with amqp(*APP, VHOST) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        # Its own exclusive queue: the drill leaves nothing behind.
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, body, mandatory=True)
        method, _, got = channel.basic_get(queue, auto_ack=True)
        assert method is not None and got == body
        # The restored queues are there for it.
        for name in sorted(q["name"] for q in BEFORE["queues"] if q["vhost"] == VHOST):
            assert channel.queue_declare(name, passive=True).method.queue == name


def test_the_app_user_is_still_refused_where_it_had_no_permission() -> None:
    other = next(v["name"] for v in BEFORE["vhosts"] if v["name"] != VHOST)
    assert not any(p["user"] == APP[0] and p["vhost"] == other for p in BEFORE["permissions"])
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(*APP, other)
