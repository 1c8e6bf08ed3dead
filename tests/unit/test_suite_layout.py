"""The test suites' import rules: helpers come from support modules, never from another test module,
and the smoke suite stays standalone (it runs against any broker with only its own dependencies).
And the unit tests that start Ansible carry the `ansible` marker, which keeps them out of `make check`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sorted(p for d in ("tests", "bench") for p in (ROOT / d).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_is_imported_from_a_test_module_or_conftest(path: Path) -> None:
    bad = {name for name in _imported(path) if name == "conftest" or name.startswith("test_")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: move the helper to a support module"


def test_the_smoke_suite_imports_only_itself_and_its_dependencies() -> None:
    for path in (ROOT / "tests" / "smoke").glob("*.py"):
        shared = _imported(path) & {"support", "cluster", "deployment", "publishing", "report", "processes"}
        assert not shared, f"{path.name} imports {sorted(shared)}; tests/smoke must run on its own"


def test_unit_test_modules_that_start_ansible_are_marked() -> None:
    """A module that runs an Ansible program (directly or through role_runner) marks its tests
    `ansible` (tests/unit/pytest.ini): they take seconds each, `make unit` runs them, `make check` not."""
    starts = ("ansible-playbook", "ansible-inventory", "ansible-doc", "role_runner")
    unmarked = [
        path.name
        for path in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if path != Path(__file__).resolve()
        and any(word in (text := path.read_text(encoding="utf-8")) for word in starts)
        and "pytest.mark.ansible" not in text
    ]
    assert not unmarked, f"{unmarked} start Ansible: add `pytestmark = pytest.mark.ansible` (or mark those tests)"
