"""The core depends on nothing that talks to a broker or a database; adapters depend on the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "account_worker"
CORE = [
    "batch",
    "delivery",
    "isolation",
    "execution",
    "inflight",
    "decisions",
    "messages",
    "store",
    "job_thread",
    "actions",
    "errors",
    "backoff",
    "commands",
]
OUTSIDE_CORE = {
    "pika",
    "psycopg",
    "paramiko",
    "account_worker.db",
    "account_worker.amqp",
    "account_worker.session",
    "account_worker.ssh",
    "account_worker.ssh_pool",
}


def imported(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_adapter(module):
    found = {name for name in imported(module) if name.split(".")[0] in OUTSIDE_CORE or name in OUTSIDE_CORE}
    assert not found


def test_record_types_come_from_the_core():
    assert "account_worker.store" in imported("db")
    assert "account_worker.db" not in imported("batch")
