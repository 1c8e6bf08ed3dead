"""The rabbitmq role's upgrade guard: which installed -> candidate moves it allows in place."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import jinja2
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


# ---------------------------------------------------------------- the one-node upgrade helper's feature flags

# `rabbitmqctl --quiet --no-table-headers list_feature_flags name state stability`: tab-separated rows.
FLAG_ROWS = "\n".join(
    [
        "classic_mirrored_queue_version\tenabled\tstable",
        "khepri_db\tdisabled\tstable",
        "message_containers\tdisabled\tstable",
        "quorum_queue_non_voters\tdisabled\tstable",
        "rabbitmq_4.2.0\tdisabled\texperimental",
    ]
)
FAKE_CLI = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $*" in
  "rabbitmqctl --quiet --no-table-headers list_feature_flags name state stability")
    [ -n "$FAIL_LIST" ] && exit 70
    printf '%s\\n' "$FLAG_ROWS" ;;
esac
"""


def run_helper(tmp_path: Path, store: str, *, fail_list: bool = False) -> tuple[int, list[str]]:
    """The rendered helper on one standalone node, every command it calls faked: (exit code, the calls)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["bool"] = bool
    text = env.from_string((ROLE / "templates/rabbitmq-upgrade-node.j2").read_text()).render(
        ansible_managed="test",
        rabbitmq_cluster_nodes=[],
        _rabbitmq_clustered=False,
        rabbitmq_start_timeout=1,
        rabbitmq_metadata_store=store,
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("rabbitmqctl", "rabbitmq-diagnostics", "rabbitmq-upgrade", "apt-get", "rabbitmq-restart-node"):
        (bin_dir / name).write_text(FAKE_CLI)
        (bin_dir / name).chmod(0o755)
    helper = tmp_path / "rabbitmq-upgrade-node"
    helper.write_text(text.replace("/usr/local/sbin/rabbitmq-restart-node", str(bin_dir / "rabbitmq-restart-node")))
    calls = tmp_path / "calls"
    env_vars = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "FLAG_ROWS": FLAG_ROWS}
    if fail_list:
        env_vars["FAIL_LIST"] = "1"
    done = subprocess.run(["sh", str(helper), "4.1.4-1"], env=env_vars, capture_output=True, text=True, check=False)
    return done.returncode, calls.read_text().splitlines() if calls.exists() else []


def enabled(calls: list[str]) -> list[str]:
    return [c.split()[-1] for c in calls if c.startswith("rabbitmqctl --quiet enable_feature_flag ")]


def test_the_upgrade_helper_enables_the_stable_flags_by_name_never_khepri_unless_chosen(tmp_path: Path) -> None:
    code, calls = run_helper(tmp_path / "mnesia", "mnesia")
    assert code == 0, calls
    assert enabled(calls) == ["message_containers", "quorum_queue_non_voters"]
    assert not any(c.endswith("enable_feature_flag all") for c in calls)
    assert any(c.startswith("apt-get install") for c in calls)  # and then it upgrades
    code, calls = run_helper(tmp_path / "khepri", "khepri")
    assert code == 0 and enabled(calls) == ["khepri_db", "message_containers", "quorum_queue_non_voters"]


def test_the_upgrade_helper_stops_before_the_upgrade_when_the_flags_cannot_be_read(tmp_path: Path) -> None:
    code, calls = run_helper(tmp_path, "mnesia", fail_list=True)
    assert code != 0
    assert not any(c.startswith("apt-get") for c in calls)
