"""Live smoke tests against a deployed RabbitMQ broker.

Point them at any broker with options or environment variables (secrets only
through the environment or a file, never on the command line):

    SMOKE_AMQP_URL         amqp[s]://user:password@host:5672/vhost   (or --amqp-url with no password
                           and SMOKE_AMQP_PASSWORD / --amqp-password-file)
    SMOKE_MANAGEMENT_URL   http[s]://host:15672                     (--management-url)
    SMOKE_ADMIN_USER       administrator for the management API      (--admin-user)
    SMOKE_ADMIN_PASSWORD   its password                              (--admin-password-file)
    SMOKE_EXPECT_VHOSTS / SMOKE_EXPECT_USERS / SMOKE_EXPECT_QUEUES    comma lists that must exist
                           (queues as vhost:name)
    SMOKE_TIMEOUT          seconds for every network call (default 10)
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pytest
import requests


@dataclass(frozen=True)
class Target:
    amqp_url: str
    management_url: str
    admin_user: str
    admin_password: str
    timeout: float
    expect_vhosts: tuple[str, ...]
    expect_users: tuple[str, ...]
    expect_queues: tuple[tuple[str, str], ...]

    @property
    def vhost(self) -> str:
        path = urlsplit(self.amqp_url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.amqp_url).username or "guest")

    def redacted_url(self) -> str:
        parts = urlsplit(self.amqp_url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:***@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit(parts._replace(netloc=netloc))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smoke", "live broker smoke tests")
    group.addoption("--amqp-url", help="AMQP URL (env SMOKE_AMQP_URL); omit the password here")
    group.addoption("--amqp-password-file", help="file holding the AMQP user's password")
    group.addoption("--management-url", help="management API base URL (env SMOKE_MANAGEMENT_URL)")
    group.addoption("--admin-user", help="management API user (env SMOKE_ADMIN_USER)")
    group.addoption("--admin-password-file", help="file holding the admin password")
    group.addoption("--smoke-timeout", type=float, help="seconds per network call (env SMOKE_TIMEOUT)")


def _option(config: pytest.Config, name: str, env: str, default: str | None = None) -> str | None:
    value = config.getoption(name)
    return value if value else os.environ.get(env, default)


def _secret(config: pytest.Config, file_option: str, env: str) -> str | None:
    path = config.getoption(file_option)
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(env)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(item for item in (value or "").split(",") if item)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    amqp_url = _option(pytestconfig, "--amqp-url", "SMOKE_AMQP_URL")
    if not amqp_url:
        pytest.fail("no broker given: set SMOKE_AMQP_URL or --amqp-url", pytrace=False)
    password = _secret(pytestconfig, "--amqp-password-file", "SMOKE_AMQP_PASSWORD")
    parts = urlsplit(amqp_url)
    if password and parts.password is None:
        user = parts.username or "guest"
        host = parts.netloc.rsplit("@", 1)[-1]
        amqp_url = urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
    management_url = _option(pytestconfig, "--management-url", "SMOKE_MANAGEMENT_URL")
    if not management_url:
        management_url = f"http://{parts.hostname}:15672"
    queues = tuple(tuple(q.rsplit(":", 1)) for q in _csv(os.environ.get("SMOKE_EXPECT_QUEUES")))
    return Target(
        amqp_url=amqp_url,
        management_url=management_url.rstrip("/"),
        admin_user=_option(pytestconfig, "--admin-user", "SMOKE_ADMIN_USER", "admin") or "admin",
        admin_password=_secret(pytestconfig, "--admin-password-file", "SMOKE_ADMIN_PASSWORD") or "",
        timeout=float(_option(pytestconfig, "--smoke-timeout", "SMOKE_TIMEOUT", "10") or 10),
        expect_vhosts=_csv(os.environ.get("SMOKE_EXPECT_VHOSTS")),
        expect_users=_csv(os.environ.get("SMOKE_EXPECT_USERS")),
        expect_queues=queues,  # type: ignore[arg-type]
    )


def amqp_parameters(target: Target) -> pika.URLParameters:
    params = pika.URLParameters(target.amqp_url)
    params.socket_timeout = target.timeout
    params.stack_timeout = target.timeout
    params.blocked_connection_timeout = target.timeout
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "bundle-smoke"}
    return params


@pytest.fixture
def params(target: Target) -> pika.URLParameters:
    return amqp_parameters(target)


@pytest.fixture
def connection(target: Target) -> Iterator[pika.BlockingConnection]:
    try:
        conn = pika.BlockingConnection(amqp_parameters(target))
    except pika.exceptions.ProbableAuthenticationError:
        pytest.fail(f"broker refused the credentials of {target.redacted_url()}", pytrace=False)
    except pika.exceptions.ProbableAccessDeniedError:
        pytest.fail(f"user {target.user!r} may not open vhost {target.vhost!r}", pytrace=False)
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.fail(f"cannot connect to {target.redacted_url()}: {exc!r}", pytrace=False)
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def channel(connection: pika.BlockingConnection):
    ch = connection.channel()
    yield ch
    if ch.is_open:
        ch.close()


@pytest.fixture
def name() -> str:
    """A unique name for what a test declares."""
    return f"smoke-{int(time.time())}-{secrets.token_hex(4)}"


class Management:
    """Small client of the management HTTP API with a timeout on every call."""

    def __init__(self, target: Target, user: str, password: str) -> None:
        self.base = target.management_url
        self.timeout = target.timeout
        self.session = requests.Session()
        self.session.auth = (user, password)

    def get(self, path: str) -> requests.Response:
        try:
            return self.session.get(f"{self.base}/api/{path}", timeout=self.timeout)
        except requests.RequestException as exc:
            pytest.fail(f"management API at {self.base} unreachable: {exc.__class__.__name__}", pytrace=False)

    def json(self, path: str):
        response = self.get(path)
        if response.status_code == 404 and path == "overview":
            pytest.fail(f"{self.base} has no management API (is rabbitmq_management enabled?)", pytrace=False)
        assert response.status_code == 200, f"GET /api/{path}: HTTP {response.status_code}"
        return response.json()


@pytest.fixture(scope="session")
def management(target: Target) -> Management:
    if not target.admin_password:
        pytest.fail("no admin password: set SMOKE_ADMIN_PASSWORD or --admin-password-file", pytrace=False)
    return Management(target, target.admin_user, target.admin_password)


@pytest.fixture(scope="session")
def anonymous_management(target: Target):
    return lambda user, password: Management(target, user, password)
