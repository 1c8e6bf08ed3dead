"""The rabbitmq role's upgrade guard: which installed -> candidate moves it allows in place."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles/rabbitmq"
_spec = importlib.util.spec_from_file_location(
    "rabbitmq_upgrade",
    ROLE.parents[1] / "collections/ansible_collections/bundle/ops/plugins/filter/rabbitmq_upgrade.py",
)
assert _spec and _spec.loader
upgrade = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(upgrade)
PATHS = yaml.safe_load((ROLE / "vars/main.yml").read_text())["_rabbitmq_upgrade_paths"]


def plan(installed: str, candidate: str) -> dict:
    return upgrade.rabbitmq_upgrade_plan(installed, candidate, PATHS)


@pytest.mark.parametrize(
    ("installed", "candidate", "action"),
    [
        ("", "3.10.8-1.1", "install"),
        ("3.10.8-1.1", "3.10.8-1.1", "none"),
        ("3.10.8-1.1", "3.10.8-1.2", "none"),  # a Debian revision is not a RabbitMQ version
        ("3.10.8-1.1", "3.10.9-1", "patch"),
        ("3.10.8-1.1", "3.11.2-1", "upgrade"),
        ("3.11.18-1", "3.12.0-1", "upgrade"),
        ("3.12.14-1", "3.13.7-1", "upgrade"),
        ("3.13.7-1", "1:4.0.5-3", "upgrade"),  # an epoch is not part of the version
        ("3.11.17-1", "3.12.0-1", "unsupported"),  # 3.12 starts from 3.11.18
        ("3.10.8-1.1", "4.0.5-3", "unsupported"),  # Debian 12 -> 13
        ("3.10.8-1.1", "3.12.0-1", "unsupported"),
        ("3.13.7-1", "4.1.0-1", "unsupported"),
        ("4.0.5-3", "3.10.8-1.1", "downgrade"),
        ("4.0.5-3", "4.0.4-1", "downgrade"),
        ("3.10.8-1.1", "5.0.0-1", "unsupported"),  # a series the table does not know
    ],
)
def test_actions(installed: str, candidate: str, action: str) -> None:
    assert plan(installed, candidate)["action"] == action


@pytest.mark.parametrize(
    ("installed", "candidate"), [("3.10.8-1.1", "4.0.5-3"), ("4.0.5-3", "3.10.8-1.1"), ("3.11.17-1", "3.12.0-1")]
)
def test_every_refusal_names_the_migration_playbook(installed: str, candidate: str) -> None:
    result = plan(installed, candidate)
    assert result["action"] in {"downgrade", "unsupported"}
    assert "playbooks/migrate.yml" in result["message"]
    assert installed in result["message"] and candidate in result["message"]


def test_a_long_jump_names_the_series_it_skips() -> None:
    message = plan("3.10.8-1.1", "4.0.5-3")["message"]
    assert "3.10 -> 3.11 -> 3.12 -> 3.13 -> 4.0" in message


def test_series_are_reported() -> None:
    result = plan("3.10.8-1.1", "4.0.5-3")
    assert (result["installed_series"], result["candidate_series"]) == ("3.10", "4.0")


def test_every_step_of_the_table_is_one_series_with_an_erlang_entry() -> None:
    compat = yaml.safe_load((ROLE / "vars/main.yml").read_text())["_rabbitmq_erlang_compat"]
    for start, step in PATHS.items():
        assert start in compat and step["to"] in compat, (start, step)
        assert plan(f"{start}.99-1", f"{step['to']}.0-1")["action"] == "upgrade"


def test_not_a_version() -> None:
    with pytest.raises(ValueError, match="not a RabbitMQ version"):
        plan("3.10.8-1", "(none)")
