"""Commands in the test containers through podman (they run on this machine)."""

from __future__ import annotations

import subprocess


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`, capturing text output; raises on a non-zero exit when check."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def run_in(host: str, *command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command inside the container `host` (`podman exec`)."""
    return podman("exec", host, *command, check=check, timeout=timeout)


def pids(host: str, pattern: str) -> set[str]:
    """Process ids in `host` whose command line matches pattern (empty when none)."""
    return set(run_in(host, "pgrep", "-f", pattern, check=False).stdout.split())


def kill_processes(host: str, pattern: str, signal: str = "KILL") -> None:
    """Send signal to every process in `host` whose command line matches pattern."""
    run_in(host, "pkill", f"-{signal}", "-f", pattern)


def kill_service(host: str, unit: str) -> None:
    """SIGKILL a systemd unit's processes and keep the unit stopped until start_service."""
    run_in(host, "systemctl", "kill", "--signal=KILL", unit)
    run_in(host, "systemctl", "stop", unit, check=False)


def stop_service(host: str, unit: str) -> None:
    run_in(host, "systemctl", "stop", unit)


def start_service(host: str, unit: str, timeout: float = 120) -> None:
    run_in(host, "systemctl", "start", unit, timeout=timeout)
