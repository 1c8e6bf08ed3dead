"""Holds one AMQPS connection open across a certificate rotation (tls_rotation.yml).

Connects, verifying the broker against HOLD_CA_FILE (presenting
HOLD_CLIENT_CERT and HOLD_CLIENT_KEY when given), declares an exclusive
queue, writes HOLD_READY, then keeps the connection serviced (heartbeats)
until HOLD_GO exists. Then it does a publish/get round trip on the same
connection and channel: exit 0 when the connection opened before the rotation
still works after it, 1 when it broke, 2 when no go signal came in time.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from pathlib import Path

import pika
import pika.exceptions


def main() -> int:
    params = pika.URLParameters(os.environ["HOLD_URL"])
    context = ssl.create_default_context(cafile=os.environ["HOLD_CA_FILE"])
    if os.environ.get("HOLD_CLIENT_CERT"):  # mutual TLS
        context.load_cert_chain(os.environ["HOLD_CLIENT_CERT"], os.environ.get("HOLD_CLIENT_KEY") or None)
    params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    params.heartbeat = 5
    ready, go = Path(os.environ["HOLD_READY"]), Path(os.environ["HOLD_GO"])
    deadline = time.monotonic() + float(os.environ.get("HOLD_TIMEOUT", "300"))
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    ready.write_text("connected\n")
    try:
        while not go.exists():
            if time.monotonic() > deadline:
                print("no go signal in time")
                return 2
            connection.process_data_events(time_limit=0.5)
        channel.basic_publish("", queue, b"after the rotation")
        while time.monotonic() < deadline:
            _method, _props, body = channel.basic_get(queue, auto_ack=True)
            if body == b"after the rotation":
                print("connection kept: a message went round on the connection opened before the rotation")
                return 0
            connection.process_data_events(time_limit=0.2)
    except pika.exceptions.AMQPError as exc:
        print(f"connection lost during the rotation: {exc!r}")
        return 1
    finally:
        if connection.is_open:
            connection.close()
    print("the message did not come back")
    return 1


if __name__ == "__main__":
    sys.exit(main())
