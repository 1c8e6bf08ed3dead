"""Helpers of the production scenario's tests: where things are, Prometheus's API, and running the bundle's
own playbooks (doctor.yml, site.yml) against the scenario's inventory, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from support.playbooks import ANSI, ROOT, recap, run_playbook
from support.prometheus import wait_scraped

__all__ = ["ANSI", "ROOT", "Deployment", "failing", "recap"]


@dataclass(frozen=True)
class Deployment:
    inventory: str  # the scenario's inventory directory
    prometheus_url: str
    brokers: list[str]
    workers: list[str]
    monitoring: str
    vhost: str
    reports: Path

    @classmethod
    def from_env(cls) -> Deployment:
        return cls(
            inventory=os.environ["PROD_INVENTORY"],
            prometheus_url=os.environ["PROD_PROMETHEUS_URL"],
            brokers=os.environ["PROD_BROKERS"].split(","),
            workers=os.environ["PROD_WORKERS"].split(","),
            monitoring=os.environ["PROD_MONITORING"],
            vhost=os.environ.get("PROD_VHOST", "app"),
            reports=Path(os.environ.get("BUNDLE_REPORTS_DIR", ROOT / "reports")),
        )

    # ------------------------------------------------------------ Prometheus --
    def query(self, promql: str) -> list[dict]:
        r = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def targets(self) -> list[dict]:
        r = requests.get(f"{self.prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["activeTargets"]

    def wait_targets_up(self, timeout: float = 90) -> list[dict]:
        """Until every target was scraped, and up, by a scrape that started after this call (after a repair)."""
        return wait_scraped(self.targets, time.time(), timeout, up=True, poll=2)

    # ------------------------------------------------------------- playbooks --
    def playbook(self, playbook: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        binary = os.environ.get("PROD_ANSIBLE_PLAYBOOK", "ansible-playbook")
        return run_playbook(binary, self.inventory, playbook, *args, timeout=timeout)

    def doctor(self, name: str, *args: str) -> tuple[int, list[dict], str]:
        """Run playbooks/doctor.yml (with `args`, e.g. a --limit); its exit code, its rows and the printed table."""
        report = self.reports / f"doctor-{name}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.unlink(missing_ok=True)
        run = self.playbook("playbooks/doctor.yml", "-e", f"doctor_report_file={report}", *args)
        rows = json.loads(report.read_text()) if report.exists() else []
        table = _table(run.stdout)
        (self.reports / f"doctor-{name}.txt").write_text(table + "\n")
        return run.returncode, rows, table


def _table(stdout: str) -> str:
    """The table the doctor printed (the debug task's msg block)."""
    text = ANSI.sub("", stdout)
    block = text.split("TASK [Show the report]", 1)[-1].split("TASK [", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    return "\n".join(line for line in lines if line and not line.startswith(("ok:", "msg:", "*")))


def failing(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["host"], r["check"]) for r in rows if r["state"] == "fail"]


def assert_passes(deployment: Deployment, name: str) -> list[dict]:
    rc, rows, table = deployment.doctor(name)
    assert rc == 0 and not failing(rows), f"the doctor should pass ({name}):\n{table}"
    return rows
