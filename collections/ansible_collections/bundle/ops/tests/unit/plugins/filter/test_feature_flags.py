"""Which feature flags the rabbitmq role enables: stable ones by name, never khepri_db unless the inventory
chose Khepri. Inputs are real list_feature_flags output (data/feature_flags/README.md beside this file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bundle.ops.plugins.filter import rabbitmq_feature_flags as ff

DATA = Path(__file__).parent / "data/feature_flags"


def sample(name: str, disabled: tuple[str, ...] = ()) -> list[dict]:
    """The sample, with `disabled` turned off (as after an upgrade that brought them)."""
    flags = json.loads((DATA / f"{name}.json").read_text())
    for flag in flags:
        if flag["name"] in disabled:
            flag["state"] = "disabled"
    return flags


def test_a_fresh_node_has_nothing_to_enable():
    assert ff.rabbitmq_feature_flags_to_enable(sample("3.10.8")) == []
    assert ff.rabbitmq_feature_flags_to_enable(sample("4.0.5")) == []


def test_disabled_stable_flags_are_enabled_by_name_and_required_or_experimental_ones_never():
    flags = sample("3.10.8", disabled=("user_limits", "stream_queue"))
    assert ff.rabbitmq_feature_flags_to_enable(flags) == ["stream_queue", "user_limits"]
    # On 4.0 khepri_db is experimental: not enabled, even for the khepri store (the precheck refuses that).
    flags = sample("4.0.5", disabled=("detailed_queues_endpoint", "rabbitmq_4.0.0"))
    assert ff.rabbitmq_feature_flags_to_enable(flags) == ["detailed_queues_endpoint", "rabbitmq_4.0.0"]
    assert ff.rabbitmq_feature_flags_to_enable(flags, "khepri") == ["detailed_queues_endpoint", "rabbitmq_4.0.0"]


def test_on_4_1_khepri_db_is_stable_and_enabled_only_when_chosen():
    flags = sample("4.1-after-upgrade")
    assert {f["name"]: f["stability"] for f in flags}["khepri_db"] == "stable"
    assert ff.rabbitmq_feature_flags_to_enable(flags) == ["rabbitmq_4.1.0"]
    assert ff.rabbitmq_feature_flags_to_enable(flags, "khepri") == ["khepri_db", "rabbitmq_4.1.0"]


@pytest.mark.parametrize(
    ("name", "store", "problem"),
    [
        ("3.10.8", "mnesia", ""),
        ("4.0.5", "mnesia", ""),
        ("4.1-after-upgrade", "mnesia", ""),
        ("4.1-after-upgrade", "khepri", ""),
        ("3.10.8", "khepri", "no khepri_db feature flag"),
        ("4.0.5", "khepri", "khepri_db is experimental"),
    ],
)
def test_the_metadata_store_asked_for(name, store, problem):
    found = ff.rabbitmq_metadata_store_problem(sample(name), store)
    assert (problem in found) if problem else found == "", found


def test_khepri_once_enabled_cannot_be_left():
    flags = sample("4.1-after-upgrade")
    next(f for f in flags if f["name"] == "khepri_db")["state"] = "enabled"
    assert "cannot be undone" in ff.rabbitmq_metadata_store_problem(flags, "mnesia")
    assert ff.rabbitmq_metadata_store_problem(flags, "khepri") == ""
    assert ff.rabbitmq_feature_flags_to_enable(flags, "khepri") == ["rabbitmq_4.1.0"]


@pytest.mark.parametrize("bad", [None, {"name": "x"}, [{"state": "enabled"}]])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(AnsibleFilterError, match="list_feature_flags"):
        ff.rabbitmq_feature_flags_to_enable(bad)
    with pytest.raises(AnsibleFilterError, match="metadata store"):
        ff.rabbitmq_feature_flags_to_enable([], "etcd")
