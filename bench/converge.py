#!/usr/bin/env python3
"""Time the first converge of site.yml on a fresh sandbox and an immediate re-run.

Recreates the sandbox (playbooks/sandbox-destroy.yml, then playbooks/sandbox.yml),
runs `ansible-playbook site.yml` twice and prints a table: wall time and changed
tasks of each run, and the re-run/first ratio (goal <= 0.25, 0 changed).

    .venv/bin/python bench/converge.py [--inventory inventory/sandbox] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def playbook(*args: str) -> tuple[float, str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "CONTAINERS_CONF": str(ROOT / "containers/containers.conf"),
        "ANSIBLE_NOCOLOR": "1",
    }
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-2000:])
        raise SystemExit(f"ansible-playbook {' '.join(args)} failed (rc {proc.returncode})")
    return elapsed, proc.stdout


def changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"\schanged=(\d+)", output))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="inventory/sandbox")
    parser.add_argument("--keep", action="store_true", help="do not recreate the sandbox first")
    args = parser.parse_args()

    if not args.keep:
        playbook("playbooks/sandbox-destroy.yml", "-i", args.inventory)
    create, _ = playbook("playbooks/sandbox.yml", "-i", args.inventory)
    first, out1 = playbook("site.yml", "-i", args.inventory)
    rerun, out2 = playbook("site.yml", "-i", args.inventory)

    rows = [("create hosts", create, "-"), ("first converge", first, changed(out1)), ("re-run", rerun, changed(out2))]
    print(f"{'step':<16} {'seconds':>8} {'changed':>8}")
    for name, secs, chg in rows:
        print(f"{name:<16} {secs:>8.1f} {chg!s:>8}")
    ratio = rerun / first
    print(f"{'re-run / first':<16} {ratio:>8.2f}   goal <= 0.25, re-run changed == 0")
    return 0 if changed(out2) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
