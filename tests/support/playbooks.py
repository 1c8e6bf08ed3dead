"""Running the bundle's own playbooks against a scenario's inventory, as an operator would, and reading the
PLAY RECAP. The inventory and the ansible-playbook binary come from the caller (the scenario's environment)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_playbook(
    binary: str, inventory: str, playbook: str, *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook <ROOT/playbook> -i <inventory> <args>, uncoloured, from the repository's root."""
    return subprocess.run(
        [binary or "ansible-playbook", str(ROOT / playbook), "-i", inventory, *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host."""
    counts: dict[str, dict[str, int]] = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", ANSI.sub("", stdout), re.M):
        counts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return counts
