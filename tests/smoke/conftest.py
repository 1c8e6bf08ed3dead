"""Live smoke tests against a deployed RabbitMQ broker (see README.md beside this file).

Settings come from options or environment variables, secrets only from the
environment or a file:

    SMOKE_AMQP_URL         amqp[s]://user:password@host:5672/vhost   (or --amqp-url with no password
                           and SMOKE_AMQP_PASSWORD / --amqp-password-file)
    SMOKE_MANAGEMENT_URL   http[s]://host:15672                     (--management-url)
    SMOKE_ADMIN_USER       administrator for the management API      (--admin-user)
    SMOKE_ADMIN_PASSWORD   its password                              (--admin-password-file)
    SMOKE_EXPECT_VHOSTS / SMOKE_EXPECT_USERS / SMOKE_EXPECT_QUEUES    comma lists that must exist
                           (queues as vhost:name)
    SMOKE_TIMEOUT          seconds for every network call (default 10)
    SMOKE_CA_FILE          CA bundle verifying amqps:// and https://
    SMOKE_CLIENT_CERT / SMOKE_CLIENT_KEY   client certificate and key (mutual TLS)
    SMOKE_TLS_ONLY / SMOKE_PLAIN_AMQP_PORT / SMOKE_PLAIN_MANAGEMENT_PORT / SMOKE_TLS_MUTUAL /
    SMOKE_TLS_MIN_DAYS     what the TLS checks (test_tls.py) expect

Opt-in: SMOKE_WORKER_* (the worker end to end), --destructive / SMOKE_DESTRUCTIVE=1
with SMOKE_RESTART_COMMAND, --browser / SMOKE_BROWSER=1; see README.md.

The broker is probed once per session (AMQP, then the management API); when that
fails, the session stops after one error that says why.
"""

from __future__ import annotations

import os
import secrets
import traceback
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from smoke_amqp import (
    Cleanup,
    Connections,
    close_quietly,
    connect,
    describe_amqp_error,
    parameters,
    server_properties,
)
from smoke_errors import SmokeError, fail
from smoke_management import Management, Probe, poll
from smoke_settings import (
    CONNECTION_PREFIX,
    NAME_PREFIX,
    Extras,
    Publisher,
    Target,
    TlsChecks,
    Worker,
    csv,
    new_run_id,
    parse_queue,
)

T = TypeVar("T")
NOTES = pytest.StashKey[list[str]]()
# The suite's own bad-input tests, which start this suite in a subprocess: collected only when a path
# inside it is named (`pytest tests/smoke tests/smoke/selftest`), never by `pytest tests/smoke` alone,
# so the suite users run stays the suite and the subprocess does not start itself again.
SELFTEST = Path(__file__).resolve().parent / "selftest"
STOPPING = "stopping: the broker cannot be tested with these settings (see the error above)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smoke", "live broker smoke tests")
    group.addoption("--amqp-url", help="AMQP URL (env SMOKE_AMQP_URL); omit the password here")
    group.addoption("--amqp-password-file", help="file holding the AMQP user's password")
    group.addoption("--management-url", help="management API base URL (env SMOKE_MANAGEMENT_URL)")
    group.addoption("--admin-user", help="management API user (env SMOKE_ADMIN_USER)")
    group.addoption("--admin-password-file", help="file holding the admin password")
    group.addoption("--smoke-timeout", type=float, help="seconds per network call (env SMOKE_TIMEOUT)")
    group.addoption(
        "--destructive",
        action="store_true",
        help="also run tests that restart the broker with SMOKE_RESTART_COMMAND (env SMOKE_DESTRUCTIVE=1)",
    )
    group.addoption(
        "--browser", action="store_true", help="also drive the management UI in headless Chromium (env SMOKE_BROWSER=1)"
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve() != SELFTEST:
        return None
    named = (Path(arg.split("::")[0]).resolve() for arg in config.args)
    return None if any(path.is_relative_to(SELFTEST) for path in named) else True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "destructive: restarts the broker; needs --destructive")
    config.addinivalue_line("markers", "browser: drives the management UI in Chromium; needs --browser")
    config.stash[NOTES] = []


def _extras(config: pytest.Config) -> Extras:
    return Extras.from_env(
        os.environ, destructive=bool(config.getoption("--destructive")), browser=bool(config.getoption("--browser"))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    extras = _extras(config)
    gates = {
        "destructive": (extras.destructive, "restarts the broker: run with --destructive or SMOKE_DESTRUCTIVE=1"),
        "browser": (extras.browser, "drives a browser: run with --browser or SMOKE_BROWSER=1"),
    }
    for item in items:
        for marker, (enabled, reason) in gates.items():
            if marker in item.keywords and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


def _where(exc: BaseException, item: pytest.Item) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(item.path)]
    return f"{item.path.name}:{frames[-1].lineno}: " if frames else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Failures that are the broker's or the settings' say so in one line."""
    try:
        return (yield)
    except SmokeError as exc:
        fail(f"{_where(exc, item)}{exc}")
    except (
        pika.exceptions.ChannelClosedByBroker,
        pika.exceptions.ConnectionClosedByBroker,
        pika.exceptions.StreamLostError,
        pika.exceptions.AMQPHeartbeatTimeout,
    ) as exc:
        fail(f"{_where(exc, item)}{describe_amqp_error(exc)}")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    try:
        return (yield)
    except SmokeError as exc:
        fail(f"{fixturedef.argname}: {exc}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    notes = config.stash.get(NOTES, [])
    if notes:
        terminalreporter.section("smoke notes")
        for note in notes:
            terminalreporter.write_line(note)


def _stop_on(request: pytest.FixtureRequest, action: Callable[[], T]) -> T:
    """Run a session-wide precondition; if it fails, fail this test with the reason
    alone and stop the session rather than repeat the same error for every test."""
    try:
        return action()
    except SmokeError as exc:
        request.session.shouldfail = STOPPING
        fail(str(exc))


def _option(config: pytest.Config, name: str, env: str, default: str | None = None) -> str | None:
    value = config.getoption(name)
    return value if value else os.environ.get(env, default)


def _secret(config: pytest.Config, file_option: str, env: str) -> str | None:
    path = config.getoption(file_option)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SmokeError(f"cannot read {file_option} {path}: {exc.strerror}") from None
    return os.environ.get(env)


def load_target(config: pytest.Config) -> Target:
    amqp_url = _option(config, "--amqp-url", "SMOKE_AMQP_URL")
    if not amqp_url:
        raise SmokeError("no broker given: set SMOKE_AMQP_URL or --amqp-url")
    parts = urlsplit(amqp_url)
    if parts.scheme.lower() not in ("amqp", "amqps") or not parts.hostname:
        raise SmokeError("SMOKE_AMQP_URL must look like amqp[s]://user:password@host:port/vhost")
    password = _secret(config, "--amqp-password-file", "SMOKE_AMQP_PASSWORD")
    if password and parts.password is None:
        user = parts.username or "guest"
        host = parts.netloc.rsplit("@", 1)[-1]
        amqp_url = urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
    management_url = _option(config, "--management-url", "SMOKE_MANAGEMENT_URL")
    if not management_url:
        management_url = f"http://{parts.hostname}:15672"
    ca_file = os.environ.get("SMOKE_CA_FILE") or None
    client_cert = os.environ.get("SMOKE_CLIENT_CERT") or None
    client_key = os.environ.get("SMOKE_CLIENT_KEY") or None
    files = {"SMOKE_CA_FILE": ca_file, "SMOKE_CLIENT_CERT": client_cert, "SMOKE_CLIENT_KEY": client_key}
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise SmokeError(f"{name} {path} is not a file")
    try:
        timeout = float(_option(config, "--smoke-timeout", "SMOKE_TIMEOUT", "10") or 10)
    except ValueError:
        raise SmokeError("SMOKE_TIMEOUT must be a number of seconds") from None
    return Target(
        amqp_url=amqp_url,
        management_url=management_url.rstrip("/"),
        admin_user=_option(config, "--admin-user", "SMOKE_ADMIN_USER", "admin") or "admin",
        admin_password=_secret(config, "--admin-password-file", "SMOKE_ADMIN_PASSWORD") or "",
        timeout=timeout,
        expect_vhosts=csv(os.environ.get("SMOKE_EXPECT_VHOSTS")),
        expect_users=csv(os.environ.get("SMOKE_EXPECT_USERS")),
        expect_queues=tuple(parse_queue(spec) for spec in csv(os.environ.get("SMOKE_EXPECT_QUEUES"))),
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
    )


# -- session: settings, the probe, the final check ---------------------------------------


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Target:
    return _stop_on(request, lambda: load_target(pytestconfig))


@pytest.fixture(scope="session")
def tls_checks() -> TlsChecks:
    try:
        return TlsChecks.from_env(os.environ)
    except ValueError:
        raise SmokeError(
            "SMOKE_PLAIN_AMQP_PORT, SMOKE_PLAIN_MANAGEMENT_PORT and SMOKE_TLS_MIN_DAYS must be numbers"
        ) from None


@pytest.fixture(scope="session")
def extras(pytestconfig: pytest.Config) -> Extras:
    return _extras(pytestconfig)


@pytest.fixture(scope="session")
def run_id() -> str:
    return new_run_id()


@pytest.fixture(scope="session")
def management(target: Target) -> Iterator[Management]:
    client = Management(target, target.admin_user, target.admin_password)
    yield client
    client.close()


@pytest.fixture(scope="session")
def anonymous_management(target: Target) -> Callable[[str, str], Management]:
    return lambda user, password: Management(target, user, password)


def _probe(target: Target, management: Management, run_id: str) -> Probe:
    conn = connect(target, f"{CONNECTION_PREFIX}-{run_id} probe")
    try:
        props = server_properties(conn)
    finally:
        close_quietly(conn)
    if not target.admin_password:
        raise SmokeError("no admin password: set SMOKE_ADMIN_PASSWORD or --admin-password-file")
    return Probe(server=props, overview=management.probe())


@pytest.fixture(scope="session", autouse=True)
def broker(request: pytest.FixtureRequest, target: Target, management: Management, run_id: str) -> Probe:
    """Probes AMQP and the management API once, before the first test."""
    return _stop_on(request, lambda: _probe(target, management, run_id))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(
    broker: Probe, management: Management, target: Target, run_id: str, pytestconfig: pytest.Config
) -> Iterator[None]:
    """After the last test: none of this run's queues, exchanges or connections remain.
    Objects of other runs (a concurrent run against another node of the same
    cluster, or one killed midway) are only reported."""
    yield

    def leftovers(name_prefix: str, connection_prefix: str) -> list[str]:
        try:
            return management.leftovers(name_prefix, connection_prefix)
        except SmokeError as exc:  # e.g. still restarting: keep polling
            return [str(exc)]

    mine = poll(
        lambda: leftovers(f"{NAME_PREFIX}{run_id}-", f"{CONNECTION_PREFIX}-{run_id}"),
        done=lambda found: not found,
        # Closed connections leave the management API's list only when the node hosting them
        # reports it; under load that has taken more than 10 s on a cluster, so wait longer.
        timeout=max(30.0, 3 * target.timeout),
    )
    others = [o for o in leftovers(NAME_PREFIX, CONNECTION_PREFIX) if o not in mine]
    if others:
        pytestconfig.stash[NOTES].append(
            "objects of other smoke runs (concurrent, or left by a killed run): " + "; ".join(others)
        )
    if mine:
        fail(f"the smoke run {run_id} left behind: " + "; ".join(mine))


# -- per test: names, connections, channels, cleanup ---------------------------------------


@pytest.fixture
def names(run_id: str) -> Callable[[str], str]:
    """Unique names for what a test declares: smoke-<run>-<label>-<random>."""

    def new_name(label: str = "t") -> str:
        return f"{NAME_PREFIX}{run_id}-{label}-{secrets.token_hex(3)}"

    return new_name


@pytest.fixture
def name(names: Callable[[str], str]) -> str:
    return names("t")


@pytest.fixture
def amqp(target: Target, run_id: str, request: pytest.FixtureRequest) -> Iterator[Connections]:
    """Opens connections named `bundle-smoke-<run> <test> <label>`; all closed at the end."""
    connections = Connections(target, f"{CONNECTION_PREFIX}-{run_id} {request.node.name}")
    yield connections
    connections.close_all()


@pytest.fixture
def params(target: Target, run_id: str, request: pytest.FixtureRequest) -> pika.URLParameters:
    return parameters(target, f"{CONNECTION_PREFIX}-{run_id} {request.node.name}")


@pytest.fixture
def connection(amqp: Connections) -> pika.BlockingConnection:
    return amqp.open()


@pytest.fixture
def channel(connection: pika.BlockingConnection) -> Iterator[BlockingChannel]:
    ch = connection.channel()
    yield ch
    if ch.is_open:
        ch.close()


@pytest.fixture
def cleanup(amqp: Connections) -> Iterator[Cleanup]:
    """Register non-exclusive queues/exchanges; deleted after the test, pass or fail."""
    tracker = Cleanup(open_connection=lambda: amqp.open("cleanup"))
    yield tracker
    try:
        failed = tracker.run()
    except SmokeError as exc:
        fail(f"cleanup: {exc}")
    if failed:
        fail("could not delete " + ", ".join(failed))


@pytest.fixture(scope="session")
def worker(target: Target) -> Worker:
    settings = Worker.from_env(os.environ, target.timeout)
    if isinstance(settings, str):
        pytest.skip(settings)
    return settings


@pytest.fixture(scope="session")
def publisher(target: Target) -> Publisher:
    settings = Publisher.from_env(os.environ, target)
    if isinstance(settings, str):
        pytest.skip(settings)
    return settings


@pytest.fixture
def notes(pytestconfig: pytest.Config) -> list[str]:
    """Lines printed in the run's summary (e.g. where a screenshot went)."""
    return pytestconfig.stash[NOTES]
