"""The publisher's command lines and requests (test_ingress.py), built in one place so
that docs/worker.md's `curl` and `amqp-publish` examples can be checked against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from smoke_management import q
from smoke_settings import Publisher, Target

SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def job_body(apikey: str, account_uuid: str) -> str:
    return compact({"apikey": apikey, "account_uuid": account_uuid})


def publish_url(target: Target, exchange: str) -> str:
    """The HTTP API's publish endpoint of `exchange` in the target's vhost (`amq.default` is the default one)."""
    return f"{target.management_url}/api/exchanges/{q(target.vhost)}/{q(exchange)}/publish"


def publish_request(routing_key: str, body: str, **properties: Any) -> dict[str, Any]:
    """What the publish endpoint takes: properties, routing key, payload (a string, sent as is)."""
    return {"properties": properties, "routing_key": routing_key, "payload": body, "payload_encoding": "string"}


def job_request(routing_key: str, body: str, message_id: str, reply_to: str) -> str:
    """A job for the publish endpoint, as docs/worker.md's curl example sends it."""
    return compact(
        publish_request(
            routing_key,
            body,
            message_id=message_id,
            reply_to=reply_to,
            content_type="application/json",
            delivery_mode=2,
        )
    )


def curl_argv(curl: str, target: Target, publisher: Publisher, data: str) -> list[str]:
    """docs/worker.md's curl command (over HTTPS with the CA when the management URL is https://)."""
    tls = ["--cacert", target.ca_file] if target.management_tls and target.ca_file else []
    if target.management_tls and target.client_cert:
        tls += ["--cert", target.client_cert] + (["--key", target.client_key] if target.client_key else [])
    return [
        curl,
        "-sS",
        *tls,
        "-u",
        f"{publisher.user}:{publisher.password}",
        "-H",
        "content-type: application/json",
        "-d",
        data,
        publish_url(target, publisher.exchange),
    ]


def amqp_publish_argv(tool: str, target: Target, publisher: Publisher, authfile: Path) -> list[str]:
    """amqp-publish's connection options. Plain AMQP: the publisher's credentials from a file.
    AMQPS with the CA: Debian 12's amqp-tools (0.11) accepts --ssl only with --url, and --url
    excludes --authfile, so the credentials go in the URL there."""
    if not target.tls:
        argv = [tool, "--server", publisher.amqp_host, "--port", str(target.amqp_port), "--vhost", target.vhost]
        return [*argv, "--authfile", str(authfile)]
    credentials = f"{quote(publisher.user, safe='')}:{quote(publisher.password, safe='')}"
    url = f"amqps://{credentials}@{publisher.amqp_host}:{target.amqp_port}/{quote(target.vhost, safe='')}"
    argv = [tool, "--url", url, "--ssl", "--cacert", target.ca_file or SYSTEM_CAS]
    if target.client_cert:
        argv += ["--cert", target.client_cert, "--key", target.client_key or target.client_cert]
    return argv


def amqp_publish_job(exchange: str, routing_key: str, body: str, message_id: str, reply_to: str) -> list[str]:
    """The job's options: persistent JSON, the reply queue, the message id in a header (no option sets the property)."""
    return [
        "-e",
        exchange,
        "-r",
        routing_key,
        "-p",
        "-C",
        "application/json",
        "-t",
        reply_to,
        "-H",
        f"x-message-id: {message_id}",
        "-b",
        body,
    ]


def authfile_text(publisher: Publisher) -> str:
    """amqp-publish's --authfile format."""
    return f"username:{publisher.user}\npassword:{publisher.password}\n"
