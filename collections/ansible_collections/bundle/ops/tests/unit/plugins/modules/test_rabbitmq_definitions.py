"""Pure logic of the rabbitmq_definitions module (collection bundle.ops) (no broker)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ansible_collections.bundle.ops.plugins.modules import rabbitmq_definitions as defs


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


# One planning function per entity kind, each on its own.


def test_plan_vhosts_creates_only_missing_ones() -> None:
    calls, conflicts = defs.plan_vhosts(CURRENT, ["/", "app", "new"])
    assert [c.path for c in calls] == ["vhosts/new"] and conflicts == []


def test_plan_users_creates_a_missing_user_with_its_tags() -> None:
    calls, _ = defs.plan_users({}, [{**APP, "tags": ["monitoring", "management"]}])
    assert calls == [("create user app", "PUT", "users/app", {"password": "s3cret", "tags": "management,monitoring"})]


def test_plan_users_leaves_a_converged_user_alone() -> None:
    assert defs.plan_users(CURRENT, [APP]) == ([], [])


def test_plan_permissions_sets_a_differing_permission() -> None:
    user = {**APP, "permissions": [{"vhost": "app", "configure_priv": "^$", "write_priv": ".*", "read_priv": ".*"}]}
    calls, _ = defs.plan_permissions(CURRENT, [user])
    assert calls == [
        (
            "set permissions of app on app",
            "PUT",
            "permissions/app/app",
            {"configure": "^$", "write": ".*", "read": ".*"},
        )
    ]


def test_plan_permissions_ignores_users_not_listed() -> None:
    current = {"permissions": [{"user": "other", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]}
    assert defs.plan_permissions(current, [{**APP, "permissions": []}]) == ([], [])


def test_plan_exchanges_declares_missing_and_refuses_a_type_change() -> None:
    calls, conflicts = defs.plan_exchanges(
        CURRENT, [{"name": "jobs", "vhost": "app", "type": "fanout"}, {"name": "dlx", "vhost": "app"}]
    )
    assert [c.path for c in calls] == ["exchanges/app/dlx"]
    assert calls[0].body["type"] == "direct" and calls[0].body["durable"] is True
    assert len(conflicts) == 1 and "exchange jobs on vhost app exists as direct" in conflicts[0]


def test_plan_queues_declares_quorum_by_default_with_extra_arguments() -> None:
    calls, conflicts = defs.plan_queues({}, [{"name": "jobs", "arguments": {"x-delivery-limit": 5}}])
    assert conflicts == []
    assert calls == [
        (
            "declare queue / jobs",
            "PUT",
            "queues/%2F/jobs",
            {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}},
        )
    ]


def test_plan_bindings_adds_only_missing_ones_with_default_key() -> None:
    calls, _ = defs.plan_bindings(
        CURRENT,
        [
            {"source": "jobs", "destination": "jobs", "routing_key": "jobs", "vhost": "app"},
            {"source": "dlx", "destination": "dlq", "vhost": "app"},
        ],
    )
    assert calls == [
        ("bind app dlx -> dlq (#)", "POST", "bindings/app/e/dlx/q/dlq", {"routing_key": "#", "arguments": {}})
    ]


def test_plan_policies_creates_with_defaults() -> None:
    calls, _ = defs.plan_policies({}, [{"name": "p", "pattern": ".*", "definition": {"max-length": 1}}])
    assert calls[0].body == {"pattern": ".*", "definition": {"max-length": 1}, "priority": 0, "apply-to": "queues"}


def test_vhost_limits_are_set_changed_and_removed_for_listed_vhosts_only() -> None:
    current = {"vhost_limits": [{"vhost": "app", "value": {"max-connections": 100, "max-queues": 10}},
                                {"vhost": "other", "value": {"max-queues": 1}}]}  # fmt: skip
    plan = defs.plan_vhost_limits(current, [{"vhost": "app", "max_connections": 200, "max_queues": None}])
    assert plan.calls == [
        defs.Call("set max-connections of vhost app to 200", "PUT", "vhost-limits/app/max-connections", {"value": 200}),
        defs.Call("remove max-queues of vhost app", "DELETE", "vhost-limits/app/max-queues", None),
    ]
    assert defs.plan_vhost_limits(current, [{"vhost": "app", "max_connections": 100, "max_queues": 10}]).calls == []


def test_user_limits_on_a_user_without_any() -> None:
    plan = defs.plan_user_limits({"user_limits": []}, [{"user": "app", "max_channels": 64}])
    assert plan.calls == [
        defs.Call("set max-channels of user app to 64", "PUT", "user-limits/app/max-channels", {"value": 64})
    ]


def test_operator_policies_are_applied_like_policies_on_their_own_endpoint() -> None:
    guard = {"name": "guard", "vhost": "/", "pattern": ".*", "definition": {"max-length": 100000}}
    plan = defs.plan_operator_policies({"operator_policies": []}, [guard])
    assert [(c.method, c.path) for c in plan.calls] == [("PUT", "operator-policies/%2F/guard")]
    assert plan.calls[0].body == {"pattern": ".*", "definition": {"max-length": 100000}, "priority": 0,
                                  "apply-to": "queues"}  # fmt: skip
    have = {"operator_policies": [{"vhost": "/", "name": "guard", **plan.calls[0].body}]}
    assert defs.plan_operator_policies(have, [guard]).calls == []


def test_limits_and_operator_policies_are_read_only_when_asked_for() -> None:
    api = FakeApi(CURRENT)
    defs.converge(api, wanted(), False)
    assert api.read == ["definitions"]
    api = FakeApi({**CURRENT, "vhost-limits": [{"vhost": "app", "value": {"max-queues": 5}}]})
    result = defs.converge(api, wanted(vhost_limits=[{"vhost": "app", "max_queues": 5}], user_limits=[],
                                      operator_policies=[]), False)  # fmt: skip
    assert api.read == ["definitions", "vhost-limits"] and result == {"changed": False, "changes": []}


def test_plan_absent_users_removes_present_ones() -> None:
    calls, _ = defs.plan_absent_users(CURRENT, ["guest", "nobody"])
    assert calls == [("remove user guest", "DELETE", "users/guest", None)]


# The driver and the module's result: names, never secrets.


class FakeApi:
    def __init__(self, current: dict, fail_on: str | None = None) -> None:
        self.current = current
        self.fail_on = fail_on
        self.sent: list[tuple[str, str, dict | None]] = []
        self.read: list[str] = []

    def call(self, method: str, path: str, body: dict | None = None):
        if method == "GET":
            self.read.append(path)
            return self.current if path == "definitions" else self.current.get(path, [])
        if path == self.fail_on:
            raise defs.ApiError(f"{method} {path}: HTTP 500")
        self.sent.append((method, path, body))
        return None


SECRETS = ("s3cret", "new-secret", rabbit_hash("s3cret"), rabbit_hash("guest"))


def assert_no_secret(result: dict) -> None:
    text = repr(result)
    for secret in SECRETS:
        assert secret not in text


def test_converge_applies_the_plan_and_reports_names_only() -> None:
    api = FakeApi(CURRENT)
    result = defs.converge(api, wanted(users=[{**APP, "password": "new-secret"}], absent_users=["guest"]), False)
    assert result["changed"] is True
    assert result["changes"] == ["update password of user app", "remove user guest"]
    assert result["diff"] == {"prepared": "update password of user app\nremove user guest\n"}
    assert [s[1] for s in api.sent] == ["users/app", "users/guest"]
    assert_no_secret(result)


def test_converge_in_check_mode_sends_nothing() -> None:
    api = FakeApi({})
    result = defs.converge(api, wanted(users=[APP]), True)
    assert result["changed"] is True and api.sent == []
    assert_no_secret(result)


def test_converge_reports_nothing_when_converged() -> None:
    assert defs.converge(FakeApi(CURRENT), wanted(vhosts=["/", "app"], users=[APP], **TOPOLOGY), False) == {
        "changed": False,
        "changes": [],
    }


def test_a_conflict_fails_before_any_call_without_secrets() -> None:
    api = FakeApi(CURRENT)
    queues = [{"name": "jobs", "vhost": "app", "type": "classic"}]
    result = defs.converge(api, wanted(users=[{**APP, "password": "new-secret"}], queues=queues), False)
    assert result["failed"] is True and "cannot change in place" in result["msg"]
    assert api.sent == []
    assert_no_secret(result)


def test_an_api_failure_reports_what_was_done_without_secrets() -> None:
    api = FakeApi({}, fail_on="permissions/app/app")
    result = defs.converge(api, wanted(vhosts=["app"], users=[{**APP, "password": "new-secret"}]), False)
    assert result["failed"] is True and result["msg"] == "PUT permissions/app/app: HTTP 500"
    assert result["changes"] == ["create vhost app", "create user app"] and result["changed"] is True
    assert_no_secret(result)


def test_only_the_password_is_no_log_in_the_argument_spec() -> None:
    def no_log_paths(spec: dict, prefix: str = "") -> list[str]:
        found = []
        for name, option in spec.items():
            if option.get("no_log"):
                found.append(prefix + name)
            found += no_log_paths(option.get("options", {}), f"{prefix}{name}.")
        return found

    assert no_log_paths(defs.ARGUMENT_SPEC) == ["login_password", "users.password"]
