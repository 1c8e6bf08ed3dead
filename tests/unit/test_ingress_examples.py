"""The curl and amqp-publish examples of docs/worker.md (HTTPS ingress) are the commands the smoke suite
runs (tests/smoke/smoke_ingress.py), with the sandbox's values filled in."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "$(cat .sandbox/rabbitmq_publisher_password)"


@pytest.fixture(scope="module")
def smoke() -> dict[str, ModuleType]:
    sys.path.insert(0, str(ROOT / "tests" / "smoke"))
    try:
        return {name: importlib.import_module(name) for name in ("smoke_ingress", "smoke_settings")}
    finally:
        sys.path.remove(str(ROOT / "tests" / "smoke"))


def readme_command(program: str) -> list[list[str]]:
    """Each shell line of docs/worker.md's ```sh blocks that runs `program` (continuations joined)."""
    text = (ROOT / "docs" / "worker.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(program + " "):
                # Keep the command substitution as one word, as the shell would.
                commands.append(shlex.split(line.replace(PASSWORD, "PASSWORD")))
    return commands


def sandbox(smoke: dict[str, ModuleType]) -> tuple[object, object]:
    settings = smoke["smoke_settings"]
    target = settings.Target(
        amqp_url="amqps://app:x@127.0.0.1:5671/app",
        management_url="https://127.0.0.1:15671",
        admin_user="admin",
        admin_password="x",
        timeout=10,
        ca_file=".sandbox/tls/ca.crt",
    )
    publisher = settings.Publisher(
        user="publisher",
        password="PASSWORD",
        exchange="jobs",
        queue="jobs",
        amqp_host="localhost",
        curl="curl",
        amqp_publish="amqp-publish",
    )
    return target, publisher


def test_the_readme_curl_example_is_what_the_smoke_suite_runs(smoke: dict[str, ModuleType]) -> None:
    ingress = smoke["smoke_ingress"]
    target, publisher = sandbox(smoke)
    data = ingress.job_request("jobs", ingress.job_body("k", "1234"), "job-0001", "my-replies")
    assert ingress.curl_argv("curl", target, publisher, data) in readme_command("curl")


def test_the_readme_amqp_publish_example_is_what_the_smoke_suite_runs(smoke: dict[str, ModuleType]) -> None:
    ingress = smoke["smoke_ingress"]
    target, publisher = sandbox(smoke)
    argv = ingress.amqp_publish_argv("amqp-publish", target, publisher, Path("publisher.auth"))
    argv += ingress.amqp_publish_job("jobs", "jobs", ingress.job_body("k", "1234"), "job-0002", "my-replies")
    assert readme_command("amqp-publish") == [argv]
