"""The envdir and runit_services modules (collection bundle.ops) and their shared file helpers, on a temporary
directory (no runit needed)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from ansible_collections.bundle.ops.plugins.module_utils import managed_files as files
from ansible_collections.bundle.ops.plugins.modules import envdir
from ansible_collections.bundle.ops.plugins.modules import runit_services as runit

UID, GID = os.getuid(), os.getgid()
USER, GROUP = pwd.getpwuid(UID).pw_name, grp.getgrgid(GID).gr_name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- managed_files --------------------------------------------------------


def test_ensure_file_writes_then_reports_no_change(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert files.ensure_file(str(target), "a\n", uid=UID, gid=GID, mode=0o640, check=False)
    assert target.read_text() == "a\n" and mode(target) == 0o640
    assert not files.ensure_file(str(target), "a\n", uid=UID, gid=GID, mode=0o640, check=False)
    assert [p.name for p in tmp_path.iterdir()] == ["f"], "no temporary file left behind"


def test_ensure_file_fixes_mode_and_check_mode_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f"
    files.ensure_file(str(target), "a\n", uid=UID, gid=GID, mode=0o640, check=False)
    target.chmod(0o600)
    assert files.ensure_file(str(target), "b\n", uid=UID, gid=GID, mode=0o640, check=True)
    assert target.read_text() == "a\n" and mode(target) == 0o600
    assert files.ensure_file(str(target), "a\n", uid=UID, gid=GID, mode=0o640, check=False) and mode(target) == 0o640


def test_ensure_dir_creates_and_fixes_mode(tmp_path: Path) -> None:
    target = tmp_path / "d"
    assert files.ensure_dir(str(target), UID, GID, 0o750, check=True) and not target.exists()
    assert files.ensure_dir(str(target), UID, GID, 0o750, check=False) and mode(target) == 0o750
    assert not files.ensure_dir(str(target), UID, GID, 0o750, check=False)
    target.chmod(0o755)
    assert files.ensure_dir(str(target), UID, GID, 0o750, check=False) and mode(target) == 0o750


# --- envdir ---------------------------------------------------------------


def test_envdir_writes_one_file_per_variable_with_modes(tmp_path: Path) -> None:
    env = tmp_path / "env"
    outcome = envdir.converge(
        str(env), {"B": "2", "A": "amqp://u:p@h/"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640
    )
    assert outcome.changed and outcome.written == ["A", "B"] and outcome.removed == []
    assert (env / "A").read_text() == "amqp://u:p@h/\n"
    assert mode(env) == 0o750 and mode(env / "B") == 0o640


def test_envdir_second_run_changes_nothing(tmp_path: Path) -> None:
    env = tmp_path / "env"
    envdir.converge(str(env), {"A": "1"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    outcome = envdir.converge(str(env), {"A": "1"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    assert not outcome.changed


def test_envdir_rewrites_only_what_differs_and_removes_stale(tmp_path: Path) -> None:
    env = tmp_path / "env"
    envdir.converge(str(env), {"A": "1", "B": "2", "OLD": "x"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    (env / "B").chmod(0o644)
    outcome = envdir.converge(str(env), {"A": "changed", "B": "2"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    assert outcome.written == ["A", "B"] and outcome.removed == ["OLD"]
    assert sorted(p.name for p in env.iterdir()) == ["A", "B"]
    assert (env / "A").read_text() == "changed\n" and mode(env / "B") == 0o640


def test_envdir_check_mode_reports_without_writing(tmp_path: Path) -> None:
    env = tmp_path / "env"
    envdir.converge(str(env), {"A": "1", "OLD": "x"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    outcome = envdir.converge(str(env), {"A": "2"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640, check=True)
    assert outcome.written == ["A"] and outcome.removed == ["OLD"]
    assert (env / "A").read_text() == "1\n" and (env / "OLD").exists()


def test_envdir_fixes_directory_mode(tmp_path: Path) -> None:
    env = tmp_path / "env"
    envdir.converge(str(env), {"A": "1"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    env.chmod(0o755)
    outcome = envdir.converge(str(env), {"A": "1"}, uid=UID, gid=GID, dir_mode=0o750, file_mode=0o640)
    assert outcome.directory and not outcome.written and mode(env) == 0o750


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"1BAD": "x"}, "'1BAD' is not a variable name"),
        ({"A-B": "x"}, "'A-B' is not a variable name"),
        ({"SECRET": "line1\nline2"}, "the value of SECRET spans several lines"),
    ],
)
def test_envdir_rejects_bad_variables_without_showing_values(variables: dict, expected: str) -> None:
    problems = envdir.invalid(variables)
    assert len(problems) == 1 and expected in problems[0]
    assert "line1" not in problems[0]


# --- runit_services -------------------------------------------------------


class FakeModule:
    """What converge() uses of AnsibleModule: check_mode and fail_json."""

    def __init__(self, check_mode: bool = False) -> None:
        self.check_mode = check_mode

    def fail_json(self, **kwargs: object) -> None:
        raise AssertionError(kwargs["msg"])


def service(name: str, run: str = "#!/bin/sh\nexec worker\n") -> dict:
    return {"name": name, "run": run, "log_run": "#!/bin/sh\nexec svlogd -tt .\n", "log_config": "s100\nn2\n"}


def params(tmp_path: Path, services: list[dict], **extra: object) -> dict:
    for sub in ("sv", "service", "log"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return {
        "services": services,
        "sv_dir": str(tmp_path / "sv"),
        "service_dir": str(tmp_path / "service"),
        "log_root": str(tmp_path / "log"),
        "log_owner": USER,
        "log_group": GROUP,
        "wait_timeout": 1,
        "extra_pattern": None,
        **extra,
    }


def supervise(sv: Path, state: str = "run") -> None:
    """Play runsv: supervise/ok for the service and its log, and the service's state."""
    for directory in (sv, sv / "log"):
        (directory / "supervise").mkdir(exist_ok=True)
        (directory / "supervise/ok").touch()
        (directory / "supervise/stat").write_text(state + "\n")


def test_runit_files_modes_and_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = params(tmp_path, [service("w-1")])
    monkeypatch.setattr(runit, "ROOT", (UID, GID))
    sv = tmp_path / "sv/w-1"
    sv.mkdir()
    (sv / "log").mkdir()
    supervise(sv)
    outcome = runit.converge(FakeModule(), p)
    assert outcome.linked == ["w-1"] and outcome.run_changed == ["w-1"]
    assert outcome.log_run_changed == ["w-1"] and outcome.log_config_changed == ["w-1"]
    assert os.readlink(tmp_path / "service/w-1") == str(sv)
    assert (sv / "run").read_text().startswith("#!/bin/sh") and mode(sv / "run") == 0o755
    assert (tmp_path / "log/w-1/config").read_text() == "s100\nn2\n"
    again = runit.converge(FakeModule(), p)
    assert not again.changed


def test_runit_changed_run_script_is_reported_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runit, "ROOT", (UID, GID))
    for name in ("w-1", "w-2"):
        (tmp_path / "sv" / name / "log").mkdir(parents=True)
        supervise(tmp_path / "sv" / name)
    runit.converge(FakeModule(), params(tmp_path, [service("w-1"), service("w-2")]))
    outcome = runit.converge(FakeModule(), params(tmp_path, [service("w-1"), service("w-2", "#!/bin/sh\nexec new\n")]))
    assert outcome.run_changed == ["w-2"] and not outcome.linked and not outcome.log_run_changed


def test_runit_lists_extra_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runit, "ROOT", (UID, GID))
    p = params(tmp_path, [service("w-1")], extra_pattern=r"^w-[0-9]+$")
    (tmp_path / "sv/w-1/log").mkdir(parents=True)
    supervise(tmp_path / "sv/w-1")
    for name in ("w-3", "other-1"):
        (tmp_path / "service" / name).symlink_to(tmp_path / "sv" / name)
    assert runit.converge(FakeModule(), p).extra == ["w-3"]


def test_runit_fails_clearly_when_runsv_never_picks_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runit, "ROOT", (UID, GID))
    with pytest.raises(AssertionError, match="runsv did not pick up w-1 within 1 s"):
        runit.converge(FakeModule(), params(tmp_path, [service("w-1")]))


def test_runit_check_mode_changes_nothing(tmp_path: Path) -> None:
    outcome = runit.converge(FakeModule(check_mode=True), params(tmp_path, [service("w-1")]))
    assert outcome.linked == ["w-1"] and not (tmp_path / "sv/w-1").exists()


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ([{"name": "../x", "run": "#!/bin/sh", "log_run": "#!/bin/sh"}], "is not a service name"),
        ([{"name": "w-1", "run": "exec x", "log_run": "#!/bin/sh"}], "services[0].run must be a script"),
        ([service("w-1"), service("w-1")], "service names listed twice: w-1"),
    ],
)
def test_runit_rejects_malformed_services(services: list[dict], expected: str) -> None:
    assert any(expected in problem for problem in runit.invalid(services))
