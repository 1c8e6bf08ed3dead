"""The README's module map (section Architecture) names every module of the package, once, and no other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[1]
PACKAGE = WORKER / "src" / "account_worker"
README = WORKER / "README.md"


def module_map() -> dict[str, str]:
    """Module file name -> its Role text, from the Architecture section's table."""
    section = README.read_text(encoding="utf-8").split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| (.+?) \| (.+) \|", line.strip())
        if not match or match[1] in ("Module", "---"):
            continue
        names = re.findall(r"`([^`]+)`", match[1])
        assert len(names) == 1 and names[0].endswith(".py"), f"one module per line: {line}"
        assert names[0] not in rows, f"{names[0]} is listed twice"
        rows[names[0]] = match[2]
    return rows


def defined(module: str) -> set[str]:
    """The top-level names a module of the package defines."""
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_the_module_map_names_every_module_and_only_those():
    listed = set(module_map())
    present = {path.name for path in PACKAGE.glob("*.py")}
    assert sorted(present - listed) == [], "modules missing from worker/README.md's module map"
    assert sorted(listed - present) == [], "worker/README.md's module map names modules that do not exist"


@pytest.mark.parametrize(("module", "role"), sorted(module_map().items()))
def test_the_names_a_module_s_line_gives_exist_in_it(module, role):
    """`IOThread` on io_thread.py's line is a class of io_thread.py; `store.JobStore` one of store.py."""
    for name in re.findall(r"`([^`]+)`", role):
        if name.endswith(".py"):
            assert (PACKAGE / name).exists(), name
        elif re.fullmatch(r"[A-Za-z_]\w*", name):
            assert name in defined(module), f"{module} defines no {name}"
        elif re.fullmatch(r"[a-z_]+\.[A-Za-z_]\w*", name):
            other, attribute = name.split(".")
            assert attribute in defined(f"{other}.py"), f"{other}.py defines no {attribute}"
