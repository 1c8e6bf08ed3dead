"""Meta-tests of the live smoke suite: run `pytest tests/smoke` with bad settings
against a live broker and check it fails at once, with one error that says why,
and no traceback. The good settings come from the SMOKE_* environment when it
names a broker (Molecule's verify does), else from the local sandbox; without
either the tests are skipped.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[3]
SANDBOX = REPO / ".sandbox"
AMQP_PORT, MANAGEMENT_PORT = 5672, 15672
HANG_GUARD = 30  # seconds: a hang guard, not a benchmark


def _secret(name: str) -> str:
    path = SANDBOX / name
    if not path.is_file():
        pytest.skip(f"no sandbox secrets ({path} missing): run `make site` first")
    return path.read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def good() -> dict[str, str]:
    """Settings under which the suite passes: from the environment, else the sandbox."""
    if os.environ.get("SMOKE_AMQP_URL") and os.environ.get("SMOKE_ADMIN_PASSWORD"):
        # The default run only: the browser and destructive checks are the main
        # run's (a 5 s page load under a parallel Chromium is not a bad input).
        inherited = {k: v for k, v in os.environ.items() if k.startswith("SMOKE_")}
        return inherited | {"SMOKE_TIMEOUT": "5", "SMOKE_BROWSER": "", "SMOKE_DESTRUCTIVE": ""}
    app, admin = _secret("rabbitmq_app_password"), _secret("rabbitmq_admin_password")
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", AMQP_PORT)) != 0:
            pytest.skip(f"no sandbox broker on 127.0.0.1:{AMQP_PORT}")
    return {
        "SMOKE_AMQP_URL": f"amqp://app:{quote(app, safe='')}@127.0.0.1:{AMQP_PORT}/app",
        "SMOKE_MANAGEMENT_URL": f"http://127.0.0.1:{MANAGEMENT_PORT}",
        "SMOKE_ADMIN_USER": "admin",
        "SMOKE_ADMIN_PASSWORD": admin,
        "SMOKE_EXPECT_VHOSTS": "/,app",
        "SMOKE_EXPECT_USERS": "admin,app",
        "SMOKE_TIMEOUT": "5",
    }


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web_server_without_api() -> Iterator[str]:
    """An HTTP server that answers 404 to everything: a port with no management API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_suite(settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOKE_")} | settings
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "tests/smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


def test_good_settings_pass(good: dict[str, str]) -> None:
    """The control: with the right settings the same command passes."""
    result = run_suite(good)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\d+ passed", result.stdout)


def bad_settings(case: str, good: dict[str, str], web_server: str) -> dict[str, str]:
    """The settings that break in the given way."""
    url = good["SMOKE_AMQP_URL"]
    port = urlsplit(url).port or AMQP_PORT
    changes = {
        "unreachable host": {"SMOKE_AMQP_URL": url.replace(f":{port}/", ":1/")},
        "wrong credentials": {"SMOKE_AMQP_URL": re.sub(r":[^:@/]+@", ":wrong@", url)},
        "wrong vhost": {"SMOKE_AMQP_URL": url.rsplit("/", 1)[0] + "/smoke-no-vhost"},
        "no management API (404)": {"SMOKE_MANAGEMENT_URL": web_server},
        "no management API (closed port)": {"SMOKE_MANAGEMENT_URL": "http://127.0.0.1:1"},
        "management URL on the AMQP port": {"SMOKE_MANAGEMENT_URL": f"http://127.0.0.1:{port}"},
        "wrong admin password": {"SMOKE_ADMIN_PASSWORD": "wrong"},
        "no broker given": {"SMOKE_AMQP_URL": ""},
    }
    return good | changes[case]


EXPECTED_REASON = {
    "unreachable host": "cannot connect to amqp://app:***@127.0.0.1:1/app: connection refused",
    "wrong credentials": "the broker refused the credentials of amqp://app:***@",
    "wrong vhost": "may not open vhost 'smoke-no-vhost'",
    "no management API (404)": "no management API at http://127.0.0.1:",
    "no management API (closed port)": "no management API at http://127.0.0.1:1: connection refused",
    "management URL on the AMQP port": "no management API at http://127.0.0.1:",
    "wrong admin password": "refused the credentials of admin user 'admin'",
    "no broker given": "no broker given",
}


@pytest.mark.parametrize("case", list(EXPECTED_REASON))
def test_bad_settings_fail_fast_with_the_reason(case: str, good: dict[str, str], web_server_without_api: str) -> None:
    # The same reasons over TLS, with the URL as given.
    reason = EXPECTED_REASON[case].replace("amqp://", urlsplit(good["SMOKE_AMQP_URL"]).scheme + "://")
    result = run_suite(bad_settings(case, good, web_server_without_api))
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"exit {result.returncode}:\n{output[-3000:]}"
    assert reason in output, f"{reason!r} not in the output:\n{output[-3000:]}"
    assert "Traceback" not in output, f"a traceback instead of the reason:\n{output[-3000:]}"
    assert re.search(r"^1 error in ", output, re.MULTILINE), f"not exactly one error:\n{output[-3000:]}"
    assert " passed" not in output
    for secret in (good["SMOKE_ADMIN_PASSWORD"], unquote(urlsplit(good["SMOKE_AMQP_URL"]).password or "")):
        assert secret not in output, "a password leaked into the output"
