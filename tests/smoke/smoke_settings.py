"""What a smoke run is pointed at: the broker, its expected contents, optional extras.

Plain data, built once per session by conftest.py from options and environment
variables; nothing here talks to the network.
"""

from __future__ import annotations

import secrets
import shlex
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

# Every name the suite declares starts with this, every connection it opens with
# CONNECTION_PREFIX; the session's final check looks for both.
NAME_PREFIX = "smoke-"
CONNECTION_PREFIX = "bundle-smoke"


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_WORDS


def csv(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def parse_queue(spec: str) -> tuple[str, str]:
    """`vhost:name` (the last colon splits) or a bare name in vhost `/`."""
    vhost, sep, name = spec.rpartition(":")
    return (vhost, name) if sep else ("/", spec)


@dataclass(frozen=True)
class Target:
    amqp_url: str
    management_url: str
    admin_user: str
    admin_password: str
    timeout: float
    expect_vhosts: tuple[str, ...] = ()
    expect_users: tuple[str, ...] = ()
    expect_queues: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def vhost(self) -> str:
        path = urlsplit(self.amqp_url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.amqp_url).username or "guest")

    @property
    def amqp_host(self) -> str:
        return urlsplit(self.amqp_url).hostname or "localhost"

    @property
    def tls(self) -> bool:
        return urlsplit(self.amqp_url).scheme.lower() == "amqps"

    def as_user(self, user: str, password: str) -> Target:
        """The same broker and vhost, logged in as another user."""
        parts = urlsplit(self.amqp_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return replace(self, amqp_url=urlunsplit(parts._replace(netloc=f"{credentials}@{host}")))

    def redacted_url(self) -> str:
        parts = urlsplit(self.amqp_url)
        if parts.password is None:
            return self.amqp_url
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{port}"))

    @property
    def amqp_port(self) -> int:
        return urlsplit(self.amqp_url).port or (5671 if self.tls else 5672)

    @property
    def management_host(self) -> str:
        return urlsplit(self.management_url).hostname or "localhost"

    @property
    def management_port(self) -> int:
        parts = urlsplit(self.management_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def management_tls(self) -> bool:
        return urlsplit(self.management_url).scheme.lower() == "https"

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context: the CA file when given, else the system's CAs;
        with the client certificate when one is given (mutual TLS)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def http_verify(self) -> str | bool:
        """`verify` for requests: the CA file when given, else the system's CAs."""
        return self.ca_file or True

    def http_cert(self) -> tuple[str, str] | str | None:
        """`cert` for requests: the client certificate, when one is given."""
        if not self.client_cert:
            return None
        return (self.client_cert, self.client_key) if self.client_key else self.client_cert


@dataclass(frozen=True)
class TlsChecks:
    """What the TLS checks expect of the broker (test_tls.py)."""

    tls_only: bool
    plain_amqp_port: int
    plain_management_port: int
    mutual: bool
    min_days: int
    external_user: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsChecks:
        return cls(
            tls_only=is_true(env.get("SMOKE_TLS_ONLY")),
            plain_amqp_port=int(env.get("SMOKE_PLAIN_AMQP_PORT") or 5672),
            plain_management_port=int(env.get("SMOKE_PLAIN_MANAGEMENT_PORT") or 15672),
            mutual=is_true(env.get("SMOKE_TLS_MUTUAL")),
            min_days=int(env.get("SMOKE_TLS_MIN_DAYS") or 30),
            external_user=env.get("SMOKE_TLS_EXTERNAL_USER") or "",
        )


@dataclass(frozen=True)
class Worker:
    """The account worker's request/reply contract, when the operator configured it."""

    exchange: str
    routing_key: str
    account_uuid: str
    expect_host: str
    apikey: str
    timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_timeout: float) -> Worker | str:
        """The settings, or why the worker test cannot run."""
        names = (
            "SMOKE_WORKER_EXCHANGE",
            "SMOKE_WORKER_ROUTING_KEY",
            "SMOKE_WORKER_ACCOUNT_UUID",
            "SMOKE_WORKER_EXPECT_HOST",
        )
        # The exchange may legitimately be "" (the default exchange), so test presence.
        missing = [n for n in names if n not in env or (n != "SMOKE_WORKER_EXCHANGE" and not env[n])]
        if missing:
            return "worker end-to-end test not configured: set " + ", ".join(missing)
        return cls(
            exchange=env["SMOKE_WORKER_EXCHANGE"],
            routing_key=env["SMOKE_WORKER_ROUTING_KEY"],
            account_uuid=env["SMOKE_WORKER_ACCOUNT_UUID"],
            expect_host=env["SMOKE_WORKER_EXPECT_HOST"],
            apikey=env.get("SMOKE_WORKER_APIKEY") or "smoke",
            timeout=float(env.get("SMOKE_WORKER_TIMEOUT") or default_timeout),
        )


@dataclass(frozen=True)
class Publisher:
    """The least-privilege publisher (HTTPS ingress: the management API's publish
    endpoint, curl, amqp-publish), when the operator configured it."""

    user: str
    password: str = field(repr=False)
    exchange: str
    queue: str
    amqp_host: str
    curl: str
    amqp_publish: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], target: Target) -> Publisher | str:
        """The settings, or why the publisher tests cannot run."""
        missing = [n for n in ("SMOKE_PUBLISHER_USER", "SMOKE_PUBLISHER_PASSWORD") if not env.get(n)]
        if missing:
            return "publisher (HTTPS ingress) tests not configured: set " + ", ".join(missing)
        return cls(
            user=env["SMOKE_PUBLISHER_USER"],
            password=env["SMOKE_PUBLISHER_PASSWORD"],
            exchange=env.get("SMOKE_PUBLISHER_EXCHANGE") or "jobs",
            queue=env.get("SMOKE_PUBLISHER_QUEUE") or "jobs",
            amqp_host=env.get("SMOKE_PUBLISHER_AMQP_HOST") or target.amqp_host,
            curl=env.get("SMOKE_CURL") or "curl",
            amqp_publish=env.get("SMOKE_AMQP_PUBLISH") or "amqp-publish",
        )


@dataclass(frozen=True)
class Extras:
    """Opt-in parts of the suite (flags and their environment twins)."""

    destructive: bool
    restart_command: tuple[str, ...]
    restart_timeout: float
    browser: bool
    screenshot_dir: Path
    chromium: str
    chromedriver: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, destructive: bool, browser: bool) -> Extras:
        return cls(
            destructive=destructive or is_true(env.get("SMOKE_DESTRUCTIVE")),
            restart_command=tuple(shlex.split(env.get("SMOKE_RESTART_COMMAND", ""))),
            restart_timeout=float(env.get("SMOKE_RESTART_TIMEOUT") or 180),
            browser=browser or is_true(env.get("SMOKE_BROWSER")),
            screenshot_dir=Path(env.get("SMOKE_SCREENSHOT_DIR") or "reports"),
            chromium=env.get("SMOKE_CHROMIUM") or "/usr/bin/chromium",
            chromedriver=env.get("SMOKE_CHROMEDRIVER") or "/usr/bin/chromedriver",
        )


def new_run_id() -> str:
    """Tags every name and connection of one session, so concurrent runs (one per
    cluster node from the playbook) never mistake each other's objects for leftovers."""
    return secrets.token_hex(3)
