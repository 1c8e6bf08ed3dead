"""Guard rails (the rabbitmq role's rabbitmq_user_limits and rabbitmq_operator_policies), seen working: a
user's channel limit refuses the channel past it, and an operator policy caps a queue whose own policy
asks for more. What is configured is read from the management API; a deployment without such a guard rail
gets a skip that says so."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from smoke_amqp import Connections, close_quietly, connect
from smoke_management import Management, poll, q
from smoke_settings import Target

# The temporary user's channel limit: small, so that reaching it costs nothing.
TRIAL_CHANNELS = 2


def _limits(management: Management, kind: str, owner: str) -> dict[str, Any]:
    for entry in management.json(f"{kind}-limits"):
        if entry.get(kind) == owner:
            return dict(entry.get("value") or {})
    return {}


def _put(management: Management, path: str, body: dict[str, Any]) -> None:
    response = management.send("PUT", path, body)
    assert response.status_code in (201, 204), f"PUT {path}: HTTP {response.status_code} {response.text[:200]}"


def test_the_user_channel_limit_refuses_the_channel_past_it(
    management: Management, target: Target, amqp: Connections, names: Callable[[str], str]
) -> None:
    """The smoke user's limit is read, not filled: it counts cluster-wide, so opening channels up to it would
    refuse channels to everything else logged in as that user (the workers in production, the smoke runs on
    the other nodes of a cluster) until they closed. The broker's enforcement is seen instead on a user of
    this run's own with a limit of TRIAL_CHANNELS, deleted afterwards."""
    limit = _limits(management, "user", target.user).get("max-channels")
    if limit is None:
        pytest.skip(f"no max-channels limit on {target.user} (rabbitmq_user_limits)")
    assert int(limit) > 0, f"{target.user}'s max-channels is {limit}: it could not open a channel at all"
    user, password = names("limited"), secrets.token_urlsafe(24)
    _put(management, f"users/{q(user)}", {"password": password, "tags": ""})
    try:
        _put(management, f"permissions/{q(target.vhost)}/{q(user)}", {"configure": "", "write": "", "read": ""})
        _put(management, f"user-limits/{q(user)}/max-channels", {"value": TRIAL_CHANNELS})
        connection = connect(target.as_user(user, password), f"{amqp.name} channel-limit")
        try:
            for _ in range(TRIAL_CHANNELS):
                connection.channel()  # within the limit: each must open
            refused = poll(lambda: _one_channel_past_the_limit(connection), done=lambda error: error is not None)
            assert refused is not None, f"{TRIAL_CHANNELS + 1} channels opened against a limit of {TRIAL_CHANNELS}"
            assert re.search(r"limit", str(refused), re.I), f"refused for another reason: {refused!r}"
        finally:
            close_quietly(connection)
    finally:
        management.send("DELETE", f"users/{q(user)}")


def _one_channel_past_the_limit(connection: Any) -> pika.exceptions.AMQPError | None:
    """The broker counts a user's channels from its own events, a moment after each opens: a channel asked
    for straight after the last one allowed can slip through. One that does is closed again (and so is not
    counted) and the caller tries again; the refusal, once it comes, is returned."""
    try:
        extra = connection.channel()
    except pika.exceptions.AMQPError as error:
        return error
    extra.close()
    return None


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
