"""A small client of the RabbitMQ management HTTP API, with a timeout on every call
and failures worded for the operator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from smoke_errors import SmokeError, tls_reason
from smoke_settings import Target

T = TypeVar("T")

# A pooled keep-alive connection the server closed a moment before fails the next request with
# "Connection aborted" although the API is fine (seen once in a scenario's smoke run): idempotent
# calls (GET, PUT, DELETE) are sent again, at most twice, and a failure is reported as before.
# POST (a publish through the API) is never repeated.
RETRY = Retry(
    total=2,
    connect=2,
    read=2,
    status=0,
    other=0,
    backoff_factor=0.2,
    allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE"}),
    raise_on_status=False,
)


@dataclass(frozen=True)
class Probe:
    """What the session's probe learned: the AMQP server properties and /api/overview."""

    server: dict[str, Any]
    overview: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.overview["rabbitmq_version"])


def q(segment: str) -> str:
    """One path segment of the API (vhost `/` is `%2F`)."""
    return quote(segment, safe="")


class Management:
    def __init__(self, target: Target, user: str, password: str) -> None:
        self.base = target.management_url
        self.user = user
        self.timeout = target.timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=RETRY)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.auth = (user, password)
        # Passed with each request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        self.verify = target.http_verify()
        self.session.cert = target.http_cert()

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, **params: str | int) -> requests.Response:
        try:
            return self.session.get(
                f"{self.base}/api/{path}", params=params or None, timeout=self.timeout, verify=self.verify
            )
        except requests.RequestException as exc:
            raise SmokeError(f"management API at {self.base} unreachable: {_reason(exc)}") from None

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        """PUT or DELETE (the guard-rail tests' own temporary policy)."""
        try:
            return self.session.request(
                method, f"{self.base}/api/{path}", json=body, timeout=self.timeout, verify=self.verify
            )
        except requests.RequestException as exc:
            raise SmokeError(f"management API at {self.base} unreachable: {_reason(exc)}") from None

    def json(self, path: str, **params: str | int) -> Any:
        response = self.get(path, **params)
        if response.status_code != 200:
            raise SmokeError(f"GET {self.base}/api/{path} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def probe(self) -> dict[str, Any]:
        """/api/overview, or a SmokeError saying why this is no usable management API."""
        try:
            response = self.session.get(f"{self.base}/api/overview", timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise SmokeError(f"management API at {self.base}: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise SmokeError(
                f"no management API at {self.base}: {_reason(exc)} "
                "(is the rabbitmq_management plugin enabled and the URL right?)"
            ) from None
        if response.status_code == 401:
            raise SmokeError(f"the management API at {self.base} refused the credentials of admin user {self.user!r}")
        try:
            overview = response.json() if response.status_code == 200 else None
        except ValueError:
            overview = None
        if not isinstance(overview, dict) or "rabbitmq_version" not in overview:
            raise SmokeError(
                f"no management API at {self.base}: GET /api/overview answered HTTP {response.status_code} "
                "without RabbitMQ's overview (is the rabbitmq_management plugin enabled and the URL right?)"
            )
        return overview

    def _filtered(self, kind: str, prefix: str) -> list[dict[str, Any]]:
        """Objects whose name starts with `prefix`, all vhosts, without listing the rest."""
        pattern = "^" + "".join(c if c.isalnum() or c in "-_" else "\\" + c for c in prefix)
        page = self.json(kind, page=1, page_size=500, name=pattern, use_regex="true", columns="vhost,name")
        return list(page["items"])

    def leftovers(self, name_prefix: str, connection_prefix: str) -> list[str]:
        """What is still there of a run: queues, exchanges, open connections."""
        found = [f"queue {o['vhost']}:{o['name']}" for o in self._filtered("queues", name_prefix)]
        found += [f"exchange {o['vhost']}:{o['name']}" for o in self._filtered("exchanges", name_prefix)]
        for conn in self.json("connections", columns="name,user_provided_name"):
            provided = conn.get("user_provided_name") or ""
            if provided.startswith(connection_prefix):
                found.append(f"connection {provided!r} ({conn.get('name')})")
        return found


def poll(fetch: Callable[[], T], done: Callable[[T], bool] = bool, timeout: float = 10.0, interval: float = 0.25) -> T:
    """Call `fetch()` until `done(value)` or `timeout` seconds pass (the management
    statistics lag behind the broker); the last value fetched."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout | requests.ReadTimeout):
        return f"timed out ({exc.__class__.__name__})"
    if isinstance(exc, requests.exceptions.SSLError):
        return tls_reason(str(exc))
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "RemoteDisconnected" in text or "BadStatusLine" in text or "Connection aborted" in text:
            return "the port does not speak HTTP"
        return "connection failed"
    return exc.__class__.__name__
