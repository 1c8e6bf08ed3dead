"""Enqueueing jobs without Python, as the least-privilege publisher: RabbitMQ's
HTTP API publish endpoint (from Python, and with the `curl` binary, exactly as
docs/worker.md shows it) and Debian's `amqp-publish`; and everything else that
user may not do.

Needs SMOKE_PUBLISHER_USER and SMOKE_PUBLISHER_PASSWORD; the jobs that must be
answered also need the SMOKE_WORKER_* settings (test_worker.py). Each such job
is real: the worker records it like any other.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
import requests
from pika.adapters.blocking_connection import BlockingChannel

from smoke_amqp import Connections, Inbox, wait_until
from smoke_errors import fail
from smoke_ingress import (
    amqp_publish_argv,
    amqp_publish_job,
    authfile_text,
    curl_argv,
    job_body,
    job_request,
    publish_request,
    publish_url,
)
from smoke_management import Management, q
from smoke_settings import CONNECTION_PREFIX, Publisher, Target, Worker


def http_publish(target: Target, publisher: Publisher, exchange: str, request: dict[str, Any]) -> requests.Response:
    try:
        return requests.post(
            publish_url(target, exchange),
            json=request,
            auth=(publisher.user, publisher.password),
            timeout=target.timeout,
            verify=target.http_verify(),
            cert=target.http_cert(),
        )
    except requests.RequestException as exc:
        fail(f"POST {publish_url(target, exchange)} failed: {exc.__class__.__name__}")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        fail(f"{name} not found: install Debian's {package} (scripts/install-deps does)")
    return path


def run(argv: list[str], timeout: float, secret: str) -> subprocess.CompletedProcess[str]:
    """Run a client binary. Its argv may carry the password: it never goes into a report, and
    the password is masked in what the binary printed (amqp-publish repeats a URL it cannot parse)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        fail(f"{Path(argv[0]).name} did not finish within {timeout:g} s")
    done.args = [Path(argv[0]).name, "..."]  # pytest's assertion report shows the object
    for encoded in {secret, quote(secret, safe="")}:
        done.stdout, done.stderr = done.stdout.replace(encoded, "***"), done.stderr.replace(encoded, "***")
    return done


@dataclasses.dataclass
class Replies:
    """A reply queue of the test (declared by the suite's own user: the publisher may not)."""

    queue: str
    inbox: Inbox
    conn: pika.BlockingConnection

    def wait_for(self, message_id: str, timeout: float) -> dict[str, Any]:
        def ours() -> list[bytes]:
            return [d.body for d in self.inbox.deliveries if d.properties.message_id == message_id]

        if not wait_until(lambda: bool(ours()), [self.conn], timeout):
            fail(
                f"no reply to job {message_id} within {timeout:g} s (is the worker running? a job it rejects "
                "goes to its dead-letter queue unanswered)"
            )
        reply: dict[str, Any] = json.loads(ours()[0])
        return reply


@pytest.fixture
def replies(amqp: Connections, names: Callable[[str], str]) -> Replies:
    conn = amqp.open("ingress-replies")
    channel = conn.channel()
    queue = names("ingress-reply")
    channel.queue_declare(queue, exclusive=True, auto_delete=True)
    inbox = Inbox()
    channel.basic_consume(queue, inbox.on_message)
    return Replies(queue, inbox, conn)


def check_reply(reply: dict[str, Any], worker: Worker, message_id: str) -> None:
    assert reply["account_uuid"] == worker.account_uuid
    assert reply["host"] == worker.expect_host
    assert reply["message_id"] == message_id
    assert isinstance(reply.get("status"), str) and reply["status"], f"reply without a status: {reply}"


# -- the publisher's rights, as the broker reports them -----------------------------------------


def test_publisher_may_write_to_its_exchange_and_nothing_else(
    publisher: Publisher, target: Target, management: Management
) -> None:
    user = management.json(f"users/{q(publisher.user)}")
    tags = user["tags"] if isinstance(user["tags"], list) else [t for t in user["tags"].split(",") if t]
    assert tags == ["management"], "the publisher needs the management tag (the HTTP API) and no other"
    permissions = management.json(f"users/{q(publisher.user)}/permissions")
    assert [{k: p[k] for k in ("vhost", "configure", "write", "read")} for p in permissions] == [
        {"vhost": target.vhost, "configure": "^$", "write": f"^{re.escape(publisher.exchange)}$", "read": "^$"}
    ]


# -- a job in, its reply back: HTTP API from Python, curl, amqp-publish --------------------------


def test_http_api_publish_is_routed_and_the_worker_answers(
    publisher: Publisher, worker: Worker, target: Target, replies: Replies, notes: list[str]
) -> None:
    message_id = str(uuid.uuid4())
    request = publish_request(
        worker.routing_key,
        job_body(worker.apikey, worker.account_uuid),
        message_id=message_id,
        reply_to=replies.queue,
        correlation_id=message_id,
        content_type="application/json",
        delivery_mode=2,
    )
    started = time.monotonic()
    response = http_publish(target, publisher, publisher.exchange, request)
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}"
    assert response.json() == {"routed": True}
    reply = replies.wait_for(message_id, worker.timeout)
    elapsed = time.monotonic() - started
    check_reply(reply, worker, message_id)
    notes.append(f"HTTP API publish answered {response.text.strip()}; the reply came {elapsed * 1000:.0f} ms later")


def test_curl_publish_is_routed_and_the_worker_answers(
    publisher: Publisher, worker: Worker, target: Target, replies: Replies, notes: list[str]
) -> None:
    curl = tool(publisher.curl, "curl")
    message_id = str(uuid.uuid4())
    data = job_request(worker.routing_key, job_body(worker.apikey, worker.account_uuid), message_id, replies.queue)
    started = time.monotonic()
    done = run(curl_argv(curl, target, publisher, data), target.timeout, publisher.password)
    assert done.returncode == 0, f"curl exited {done.returncode}: {done.stderr.strip()[:300]}"
    assert json.loads(done.stdout) == {"routed": True}, f"curl got {done.stdout[:200]!r}"
    reply = replies.wait_for(message_id, worker.timeout)
    elapsed = time.monotonic() - started
    check_reply(reply, worker, message_id)
    notes.append(f"curl publish printed {done.stdout.strip()}; the job's reply came {elapsed * 1000:.0f} ms later")


@pytest.fixture
def authfile(publisher: Publisher, tmp_path: Path) -> Path:
    """amqp-publish's --authfile: `username:` and `password:` lines, mode 0600."""
    path = tmp_path / "publisher.auth"
    path.touch(mode=0o600)
    path.write_text(authfile_text(publisher), encoding="utf-8")
    return path


def test_amqp_publish_job_is_answered(
    *, publisher: Publisher, worker: Worker, target: Target, replies: Replies, authfile: Path, notes: list[str]
) -> None:
    """amqp-publish sets no message_id property: the worker takes it from the x-message-id header."""
    message_id = str(uuid.uuid4())
    argv = amqp_publish_argv(tool(publisher.amqp_publish, "amqp-tools"), target, publisher, authfile)
    body = job_body(worker.apikey, worker.account_uuid)
    argv += amqp_publish_job(publisher.exchange, worker.routing_key, body, message_id, replies.queue)
    started = time.monotonic()
    done = run(argv, target.timeout, publisher.password)
    assert done.returncode == 0, f"amqp-publish exited {done.returncode}: {done.stderr.strip()[:300]}"
    reply = replies.wait_for(message_id, worker.timeout)
    elapsed = time.monotonic() - started
    check_reply(reply, worker, message_id)
    notes.append(f"amqp-publish: the job's reply came {elapsed * 1000:.0f} ms after the command started")


# -- what the publisher may not do ---------------------------------------------------------------


def test_unroutable_routing_key_answers_routed_false(
    publisher: Publisher, target: Target, names: Callable[[str], str]
) -> None:
    request = publish_request(names("nowhere"), "{}", message_id=str(uuid.uuid4()), content_type="application/json")
    response = http_publish(target, publisher, publisher.exchange, request)
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}"
    assert response.json() == {"routed": False}


@pytest.mark.parametrize("exchange", ["amq.direct", "amq.default"])
def test_http_publish_to_another_exchange_is_refused(
    publisher: Publisher, target: Target, exchange: str, notes: list[str]
) -> None:
    """amq.default (the default exchange) would reach the jobs queue directly, past the jobs exchange."""
    request = publish_request(publisher.exchange, "{}", message_id=str(uuid.uuid4()))
    response = http_publish(target, publisher, exchange, request)
    # The endpoint publishes on a channel of its own: the broker's channel error comes back as HTTP 400.
    assert response.status_code == 400, f"HTTP {response.status_code}: {response.text[:200]}"
    answer = response.json()
    assert answer.get("error") == "bad_request", answer
    assert answer.get("reason", "").startswith("403 ACCESS_REFUSED"), answer
    # RabbitMQ 3.x says "write access to exchange ...", 4.x "access to exchange ..."
    assert f"access to exchange '{exchange}' in vhost '{target.vhost}' refused" in answer["reason"], answer
    notes.append(f"HTTP publish to {exchange}: {response.status_code} {response.text.strip()}")


@pytest.fixture
def publisher_channel(
    publisher: Publisher, target: Target, run_id: str, request: pytest.FixtureRequest
) -> Iterator[BlockingChannel]:
    """A channel of the publisher's own AMQP connection (closed after the test)."""
    connections = Connections(
        target.as_user(publisher.user, publisher.password), f"{CONNECTION_PREFIX}-{run_id} {request.node.name}"
    )
    try:
        yield connections.open("publisher").channel()
    finally:
        connections.close_all()


def refusal(action: Callable[[], object]) -> str:
    """Run an AMQP call the broker must refuse; `(code) text` of the channel it closed."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        action()
    return f"({refused.value.reply_code}) {refused.value.reply_text}"


def test_publisher_cannot_consume_from_the_jobs_queue(
    publisher_channel: BlockingChannel, publisher: Publisher, target: Target, notes: list[str]
) -> None:
    publisher_channel.basic_qos(prefetch_count=1)
    queue = publisher.queue
    refused = refusal(lambda: publisher_channel.basic_consume(queue, lambda *_: None))
    assert refused.startswith("(403) ACCESS_REFUSED"), refused
    assert f"queue '{queue}' in vhost '{target.vhost}'" in refused
    notes.append(f"publisher basic.consume from {queue}: {refused}")


def test_publisher_cannot_declare_a_queue(
    publisher_channel: BlockingChannel, names: Callable[[str], str], notes: list[str]
) -> None:
    queue = names("publisher-queue")
    refused = refusal(lambda: publisher_channel.queue_declare(queue, exclusive=True, auto_delete=True))
    assert refused.startswith("(403) ACCESS_REFUSED"), refused
    notes.append(f"publisher queue.declare: {refused}")


def test_publisher_cannot_publish_to_another_exchange_over_amqp(
    publisher_channel: BlockingChannel, publisher: Publisher, notes: list[str]
) -> None:
    publisher_channel.confirm_delivery()
    refused = refusal(lambda: publisher_channel.basic_publish("amq.direct", publisher.exchange, b"{}"))
    assert refused.startswith("(403) ACCESS_REFUSED"), refused
    assert "exchange 'amq.direct'" in refused
    notes.append(f"publisher basic.publish to amq.direct: {refused}")


def test_amqp_publish_to_another_exchange_is_refused(
    publisher: Publisher, target: Target, authfile: Path, notes: list[str]
) -> None:
    argv = amqp_publish_argv(tool(publisher.amqp_publish, "amqp-tools"), target, publisher, authfile)
    done = run([*argv, "-e", "amq.direct", "-r", publisher.exchange, "-b", "{}"], target.timeout, publisher.password)
    assert done.returncode != 0, "amqp-publish to amq.direct succeeded"
    assert "403" in done.stderr and "ACCESS_REFUSED" in done.stderr, done.stderr[:300]
    notes.append(f"amqp-publish to amq.direct: exit {done.returncode}, {done.stderr.strip()}")
