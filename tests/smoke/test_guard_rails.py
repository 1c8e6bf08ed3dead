"""Guard rails (the rabbitmq role's rabbitmq_user_limits and rabbitmq_operator_policies), seen working: the
smoke user's channel limit refuses the channel past it, and an operator policy caps a queue whose own policy
asks for more. What is configured is read from the management API; a deployment without such a guard rail
gets a skip that says so."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from smoke_amqp import Connections
from smoke_management import Management, poll, q
from smoke_settings import Target

# Past this, opening channels one by one until the limit is not a smoke test's job.
MOST_CHANNELS_TRIED = 2048


def _limits(management: Management, kind: str, owner: str) -> dict[str, Any]:
    for entry in management.json(f"{kind}-limits"):
        if entry.get(kind) == owner:
            return dict(entry.get("value") or {})
    return {}


def test_the_user_channel_limit_refuses_the_channel_past_it(
    management: Management, target: Target, amqp: Connections
) -> None:
    limit = _limits(management, "user", target.user).get("max-channels")
    if limit is None or not 0 < int(limit) <= MOST_CHANNELS_TRIED:
        pytest.skip(f"no max-channels limit of 1..{MOST_CHANNELS_TRIED} on {target.user} (rabbitmq_user_limits)")
    connection = amqp.open("channel-limit")
    opened = 0
    with pytest.raises(pika.exceptions.AMQPError) as refused:
        # The limit counts the user's channels cluster-wide (its workers' too): refused at `limit` at the latest.
        while opened <= int(limit):
            connection.channel()
            opened += 1
    assert opened <= int(limit), f"{opened} channels opened past the limit of {limit}"
    assert re.search(r"limit", str(refused.value), re.I), f"refused for another reason: {refused.value!r}"


def _capping_policy(management: Management, vhost: str) -> dict[str, Any] | None:
    for policy in management.json(f"operator-policies/{q(vhost)}"):
        if policy.get("apply-to") in ("queues", "classic_queues") and "max-length" in policy.get("definition", {}):
            return dict(policy)
    return None


def test_an_operator_policy_caps_a_queue_whose_own_policy_asks_for_more(
    management: Management, target: Target, channel: Any, name: str, names: Callable[[str], str]
) -> None:
    guard = _capping_policy(management, target.vhost)
    if guard is None or not re.search(guard["pattern"], name):
        pytest.skip(
            f"no operator policy capping max-length of the queues of {target.vhost} (rabbitmq_operator_policies)"
        )
    cap = int(guard["definition"]["max-length"])
    own = names("policy")
    path = f"policies/{q(target.vhost)}/{q(own)}"
    body = {"pattern": f"^{re.escape(name)}$", "definition": {"max-length": cap * 10}, "priority": 100,
            "apply-to": "queues"}  # fmt: skip
    created = management.send("PUT", path, body)
    assert created.status_code in (201, 204), f"PUT {path}: HTTP {created.status_code} {created.text[:200]}"
    try:
        channel.queue_declare(name, exclusive=True, arguments={"x-queue-type": "classic"})
        queue = poll(
            lambda: management.json(f"queues/{q(target.vhost)}/{q(name)}"),
            done=lambda qu: qu.get("policy") == own and qu.get("operator_policy") == guard["name"],
        )
        assert queue.get("policy") == own and queue.get("operator_policy") == guard["name"], queue
        assert queue["effective_policy_definition"]["max-length"] == cap, queue["effective_policy_definition"]
    finally:
        management.send("DELETE", path)
