"""Pure logic of the rabbitmq role's rabbitmq_definitions module (no broker)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles/rabbitmq/library/rabbitmq_definitions.py"
spec = importlib.util.spec_from_file_location("rabbitmq_definitions", MODULE)
defs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(defs)


def rabbit_hash(password: str, salt: bytes = b"\x01\x02\x03\x04", algo=hashlib.sha256) -> str:
    return base64.b64encode(salt + algo(salt + password.encode()).digest()).decode()


def wanted(**kw):
    base = {k: [] for k in ("vhosts", "users", "absent_users", "exchanges", "queues", "bindings", "policies")}
    base.update(kw)
    return base


APP = {
    "name": "app",
    "password": "s3cret",
    "tags": [],
    "permissions": [{"vhost": "app", "configure_priv": ".*", "write_priv": ".*", "read_priv": ".*"}],
}
CURRENT = {
    "vhosts": [{"name": "/"}, {"name": "app"}],
    "users": [
        {
            "name": "app",
            "password_hash": rabbit_hash("s3cret"),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
        },
        {"name": "guest", "password_hash": rabbit_hash("guest"), "tags": ["administrator"]},
    ],
    "permissions": [{"user": "app", "vhost": "app", "configure": ".*", "write": ".*", "read": ".*"}],
    "exchanges": [{"name": "jobs", "vhost": "app", "type": "direct", "durable": True}],
    "queues": [{"name": "jobs", "vhost": "app", "durable": True, "arguments": {"x-queue-type": "quorum"}}],
    "bindings": [
        {
            "source": "jobs",
            "vhost": "app",
            "destination": "jobs",
            "destination_type": "queue",
            "routing_key": "jobs",
            "arguments": {},
        }
    ],
    "policies": [
        {
            "vhost": "app",
            "name": "dlx",
            "pattern": "^jobs$",
            "apply-to": "queues",
            "definition": {"delivery-limit": 10},
            "priority": 0,
        }
    ],
}
TOPOLOGY = dict(
    exchanges=[{"name": "jobs", "vhost": "app", "type": "direct"}],
    queues=[{"name": "jobs", "vhost": "app"}],
    bindings=[{"source": "jobs", "destination": "jobs", "routing_key": "jobs", "vhost": "app"}],
    policies=[{"name": "dlx", "vhost": "app", "pattern": "^jobs$", "definition": {"delivery-limit": 10}}],
)


@pytest.mark.parametrize("algo", ["sha256", "sha512", "md5"])
def test_password_matches_rabbitmq_hashes(algo: str) -> None:
    h = rabbit_hash("pw", algo=getattr(hashlib, algo))
    name = f"rabbit_password_hashing_{algo}"
    assert defs.password_matches(h, name, "pw")
    assert not defs.password_matches(h, name, "other")
    assert not defs.password_matches("", name, "pw")


def test_converged_state_plans_nothing() -> None:
    calls, conflicts = defs.plan(CURRENT, wanted(vhosts=["/", "app"], users=[APP], **TOPOLOGY))
    assert calls == [] and conflicts == []


def test_changed_password_is_applied_not_ignored() -> None:
    calls, _ = defs.plan(CURRENT, wanted(users=[{**APP, "password": "new"}]))
    assert [c[0] for c in calls] == ["update password of user app"]
    assert calls[0][1:3] == ("PUT", "users/app")
    assert calls[0][3]["password"] == "new"


def test_tags_change_keeps_password() -> None:
    calls, _ = defs.plan(CURRENT, wanted(users=[{**APP, "tags": ["monitoring"]}]))
    assert calls[0][3] == {"password": "s3cret", "tags": "monitoring"}


def test_missing_objects_are_created_in_order() -> None:
    calls, conflicts = defs.plan({}, wanted(vhosts=["app"], users=[APP], **TOPOLOGY))
    assert conflicts == []
    assert [c[0].split()[0] for c in calls] == ["create", "create", "set", "declare", "declare", "bind", "apply"]
    assert calls[0][2] == "vhosts/app"
    assert calls[3][2] == "exchanges/app/jobs"
    assert calls[4][3]["arguments"] == {"x-queue-type": "quorum"}
    assert calls[5][2] == "bindings/app/e/jobs/q/jobs"


def test_permissions_are_authoritative_for_listed_users() -> None:
    current = {
        **CURRENT,
        "permissions": CURRENT["permissions"]
        + [{"user": "app", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
    }
    calls, _ = defs.plan(current, wanted(users=[APP]))
    assert [(c[0], c[1], c[2]) for c in calls] == [("remove permissions of app on /", "DELETE", "permissions/%2F/app")]


def test_missing_permission_keys_mean_nothing_allowed() -> None:
    calls, _ = defs.plan(CURRENT, wanted(users=[{**APP, "permissions": [{"vhost": "app", "read_priv": ".*"}]}]))
    assert calls[0][3] == {"configure": "^$", "write": "^$", "read": ".*"}


def test_queue_type_change_is_a_conflict_not_a_silent_success() -> None:
    _, conflicts = defs.plan(CURRENT, wanted(queues=[{"name": "jobs", "vhost": "app", "type": "classic"}]))
    assert len(conflicts) == 1 and "cannot change in place" in conflicts[0]


def test_classic_queue_without_type_argument_matches() -> None:
    current = {"queues": [{"name": "r", "vhost": "/", "durable": True, "arguments": {}}]}
    calls, conflicts = defs.plan(current, wanted(queues=[{"name": "r", "type": "classic"}]))
    assert calls == [] and conflicts == []


def test_policy_difference_is_reapplied() -> None:
    policy = {**TOPOLOGY["policies"][0], "definition": {"delivery-limit": 5}}
    calls, _ = defs.plan(CURRENT, wanted(policies=[policy]))
    assert calls[0][1:3] == ("PUT", "policies/app/dlx")


def test_guest_removed_only_when_present() -> None:
    calls, _ = defs.plan(CURRENT, wanted(absent_users=["guest"]))
    assert [c[2] for c in calls] == ["users/guest"]
    calls, _ = defs.plan({"users": []}, wanted(absent_users=["guest"]))
    assert calls == []


def test_vhost_slash_is_encoded() -> None:
    calls, _ = defs.plan({}, wanted(vhosts=["/"]))
    assert calls[0][2] == "vhosts/%2F"
