"""JSON reports under reports/ (git-ignored), written by the live suites and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def write_report(path: Path, data: Any) -> None:
    """Write data as indented JSON (values JSON cannot hold as their str()), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def read_report(path: Path) -> Any | None:
    """What write_report wrote, or None when there is no report."""
    return json.loads(path.read_text()) if path.exists() else None
