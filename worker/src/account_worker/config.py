"""Configuration from environment variables only (runit: chpst -e /etc/NAME/env).

Every setting is declared once, as a field of Config whose metadata names its
environment variable, parser, README text and secrecy; SETTINGS is read from those
fields, and load_config(), Config.__repr__, Config.secrets() and the README table
test (tests/test_config.py) are all derived from it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from account_worker.errors import ConfigError
from account_worker.redact import MASK, redact_url

DEFAULT_ACTION = "account_worker.actions:default_action"
SSH_ACTION = "ssh"  # WORKER_ACTION's name for the built-in SSH action (account_worker.ssh)
RUNIT_KILL_WAIT = 7.0
MAX_TTL_MS = 2**32 - 1  # RabbitMQ per-message TTL upper bound
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Parser = Callable[[str, str], Any]
"""(variable name, stripped non-empty text) -> value; raises ConfigError naming the variable."""

_META = "setting"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a setting whose variable must be set."""


@dataclass(frozen=True)
class Redaction:
    """How a secret setting is shown in repr and which literal strings it hides in logs."""

    show: Callable[[Any], Any]
    literals: Callable[[Any], tuple[str, ...]]


def _password(url: str) -> tuple[str, ...]:
    password = urlsplit(url).password
    return (password,) if password else ()


URL_PASSWORD = Redaction(show=redact_url, literals=_password)
URL_PASSWORDS = Redaction(
    show=lambda urls: tuple(redact_url(u) for u in urls),
    literals=lambda urls: tuple(p for u in urls for p in _password(u)),
)
WHOLE_VALUE = Redaction(show=lambda v: MASK if v else None, literals=lambda v: (v,) if v else ())


@dataclass(frozen=True)
class Source:
    """Where a Config field comes from (the field metadata; see Setting for the meaning)."""

    env: str
    parse: Parser
    doc: str
    secret: Redaction | None = None
    default_from: Callable[[Mapping[str, Any]], Any] | None = None
    shown_default: str | None = None


@dataclass(frozen=True)
class Setting:
    """One worker setting: Config attribute, environment variable, parser, default, README text, secrecy.

    default_from computes the default from the settings parsed before it (the retry queue
    follows the queue); shown_default is the README's text for such a default.
    """

    name: str
    env: str
    parse: Parser
    default: Any
    doc: str
    secret: Redaction | None = None
    default_from: Callable[[Mapping[str, Any]], Any] | None = None
    shown_default: str | None = None

    @classmethod
    def of(cls, config_field: Field[Any]) -> Setting:
        source: Source = config_field.metadata[_META]
        default = REQUIRED if config_field.default is MISSING else config_field.default
        return cls(
            config_field.name,
            source.env,
            source.parse,
            default,
            source.doc,
            source.secret,
            source.default_from,
            source.shown_default,
        )

    @property
    def readme_default(self) -> str:
        """The Default column of the README table."""
        if self.shown_default is not None:
            return f"`{self.shown_default}`"
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return f"`{str(self.default).lower()}`"
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"

    def read(self, environ: Mapping[str, str], earlier: Mapping[str, Any]) -> Any:
        raw = environ.get(self.env)
        text = raw.strip() if raw is not None else ""
        if text:
            return self.parse(self.env, text)
        if self.default is REQUIRED:
            raise ConfigError(f"{self.env} is required")
        if self.default_from is not None:
            return self.parse(self.env, self.default_from(earlier))
        return self.default


def env(
    name: str,
    parse: Parser,
    doc: str,
    *,
    secret: Redaction | None = None,
    default_from: Callable[[Mapping[str, Any]], Any] | None = None,
    shown_default: str | None = None,
) -> dict[str, Source]:
    """Field metadata binding a Config field to its environment variable."""
    return {_META: Source(name, parse, doc, secret, default_from, shown_default)}


# ---------------------------------------------------------------------------- parsers


def _integer(lo: int, hi: int | None = None) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
        return value

    return parse


def _number(accept: Callable[[float], bool], rule: str) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if not accept(value):
            raise ConfigError(f"{name} must be {rule}, got {value:g}")
        return value

    return parse


def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true/false/1/0/yes/no, got {raw!r}")


def _text(name: str, raw: str) -> str:
    return raw


def _amqp_name(name: str, raw: str) -> str:
    if len(raw) > 255 or any(c.isspace() for c in raw):
        raise ConfigError(f"{name} must be a queue/exchange name without spaces (max 255 chars)")
    return raw


def _amqp_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in raw.split(","))
    for index, url in enumerate(urls, start=1):
        if not url:
            raise ConfigError(f"{name} has an empty entry (item {index})")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"{name} item {index} is not a valid URL: {exc}") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigError(f"{name} item {index} must start with amqp:// or amqps://")
        if not parts.hostname:
            raise ConfigError(f"{name} item {index} has no host")
    return urls


def _database_url(name: str, raw: str) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must start with postgresql://")
    return raw


def _pem_file(name: str, raw: str) -> str:
    if not os.path.isabs(raw):
        raise ConfigError(f"{name} must be an absolute path, got {raw!r}")
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ConfigError(f"{name}: {raw} is not a readable file")
    return raw


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _action_path(name: str, raw: str) -> str:
    if raw == SSH_ACTION:
        return raw
    module, sep, attr = raw.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{name} must be 'ssh' or look like 'package.module:function', got {raw!r}")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    return level


# ---------------------------------------------------------------------------- the settings


@dataclass(frozen=True, repr=False)
class Config:
    amqp_urls: tuple[str, ...] = field(
        metadata=env(
            "WORKER_AMQP_URLS",
            _amqp_urls,
            "comma-separated `amqp://` / `amqps://` URLs; cluster nodes tried in turn",
            secret=URL_PASSWORDS,
        )
    )
    database_url: str = field(
        metadata=env("WORKER_DATABASE_URL", _database_url, "`postgresql://` URL", secret=URL_PASSWORD)
    )
    amqp_ca_file: str | None = field(
        default=None,
        metadata=env(
            "WORKER_AMQP_CA_FILE",
            _pem_file,
            "PEM CA bundle that verifies the broker's certificate on `amqps://` URLs (unset: the system's "
            "trust store); the certificate and the host name are always verified, there is no opt-out; "
            "when set, every URL must be `amqps://`",
        ),
    )
    amqp_client_cert: str | None = field(
        default=None,
        metadata=env(
            "WORKER_AMQP_CLIENT_CERT",
            _pem_file,
            "PEM client certificate presented to the broker (mutual TLS); needs `WORKER_AMQP_CLIENT_KEY`",
        ),
    )
    amqp_client_key: str | None = field(
        default=None,
        metadata=env("WORKER_AMQP_CLIENT_KEY", _pem_file, "its private key (unencrypted PEM)"),
    )
    database_ca_file: str | None = field(
        default=None,
        metadata=env(
            "WORKER_DATABASE_CA_FILE",
            _pem_file,
            "PEM CA bundle; when set, PostgreSQL connections use `sslmode=verify-full` with it (an `sslmode` "
            "or `sslrootcert` in the URL is refused); unset: the URL's own settings",
        ),
    )
    queue: str = field(default="jobs", metadata=env("WORKER_QUEUE", _amqp_name, "queue consumed"))
    dead_letter_exchange: str = field(
        default="jobs.dlx",
        metadata=env(
            "WORKER_DEAD_LETTER_EXCHANGE",
            _amqp_name,
            "fanout exchange for dead letters (DLQ is `<queue>.dlq`)",
            default_from=lambda earlier: f"{earlier['queue']}.dlx",
            shown_default="<queue>.dlx",
        ),
    )
    retry_queue: str = field(
        default="jobs.retry",
        metadata=env(
            "WORKER_RETRY_QUEUE",
            _amqp_name,
            "delay queue; messages expire back into `<queue>`",
            default_from=lambda earlier: f"{earlier['queue']}.retry",
            shown_default="<queue>.retry",
        ),
    )
    prefetch: int = field(
        default=100, metadata=env("WORKER_PREFETCH", _integer(1, 10000), "basic.qos prefetch, 1..10000")
    )
    batch_size: int = field(
        default=50, metadata=env("WORKER_BATCH_SIZE", _integer(1, 1000), "jobs per database transaction, 1..1000")
    )
    heartbeat: int = field(
        default=30, metadata=env("WORKER_HEARTBEAT", _integer(5, 600), "AMQP heartbeat seconds, 5..600")
    )
    max_attempts: int = field(
        default=5,
        metadata=env(
            "WORKER_MAX_ATTEMPTS",
            _integer(1, 100),
            "attempts before a transient failure is dead-lettered, 1..100",
        ),
    )
    delivery_limit: int = field(
        default=50,
        metadata=env(
            "WORKER_DELIVERY_LIMIT",
            _integer(2, 1000),
            "the work queue's `delivery-limit` (its dead-letter policy), 2..1000: returns to the queue after "
            "which the broker itself dead-letters a message",
        ),
    )
    crash_limit: int = field(
        default=3,
        metadata=env(
            "WORKER_CRASH_LIMIT",
            _integer(1, 100),
            "returns to the queue unsettled (`x-delivery-count`) after which a message is dead-lettered "
            "as `crashed the worker`, 1..100; keep it below the queue's delivery limit",
        ),
    )
    retry_delay_ms: int = field(
        default=5000, metadata=env("WORKER_RETRY_DELAY_MS", _integer(0, MAX_TTL_MS), "delay before a retry, >= 0")
    )
    shutdown_grace: float = field(
        default=5.0,
        metadata=env(
            "WORKER_SHUTDOWN_GRACE",
            _number(
                lambda v: 0 < v < RUNIT_KILL_WAIT,
                f"> 0 and < {RUNIT_KILL_WAIT:g} (runit kills after {RUNIT_KILL_WAIT:g} s)",
            ),
            "seconds the jobs in flight may take after SIGTERM; > 0 and < 7 (runit)",
        ),
    )
    apikey: str | None = field(
        default=None,
        metadata=env("WORKER_APIKEY", _text, "if set, each message's `apikey` must equal it", secret=WHOLE_VALUE),
    )
    action: str = field(
        default=DEFAULT_ACTION,
        metadata=env(
            "WORKER_ACTION", _action_path, "`ssh` (run an allow-listed command) or a `module:function` action"
        ),
    )
    declare_topology: bool = field(
        default=False,
        metadata=env(
            "WORKER_DECLARE_TOPOLOGY",
            _boolean,
            "declare exchange/queues at start (tests; production uses the rabbitmq role)",
        ),
    )
    log_level: str = field(
        default="INFO", metadata=env("WORKER_LOG_LEVEL", _log_level, "DEBUG, INFO, WARNING, ERROR, CRITICAL")
    )
    host_cache_ttl: float = field(
        default=30.0,
        metadata=env(
            "WORKER_HOST_CACHE_TTL", _number(lambda v: v >= 0, ">= 0"), "seconds to cache account hosts; 0 disables"
        ),
    )

    metrics_port: int | None = field(
        default=None,
        metadata=env(
            "WORKER_METRICS_PORT",
            _integer(1, 65535),
            "port of this instance's HTTP server: Prometheus `/metrics` and `/ready` (200 or 503); unset: none",
        ),
    )
    metrics_address: str = field(
        default="127.0.0.1",
        metadata=env("WORKER_METRICS_ADDRESS", _text, "address the metrics server listens on (`0.0.0.0`: all)"),
    )
    metrics_database_check: float = field(
        default=10.0,
        metadata=env(
            "WORKER_METRICS_DATABASE_CHECK",
            _number(lambda v: v >= 1, ">= 1"),
            "seconds between the metrics server's own database pings, made only while no batch has "
            "shown the database answering within that time; >= 1",
        ),
    )
    concurrency: int = field(
        default=1,
        metadata=env(
            "WORKER_CONCURRENCY",
            _integer(1, 256),
            "actions run at once (threads), 1..256; above 1, each run is recorded and acked as it finishes",
            default_from=lambda earlier: "16" if earlier["action"] == SSH_ACTION else "1",
            shown_default="16 with ssh, else 1",
        ),
    )
    ssh_user: str = field(
        default="account-jobs", metadata=env("WORKER_SSH_USER", _text, "ssh action: user on the account hosts")
    )
    ssh_key_file: str | None = field(
        default=None,
        metadata=env("WORKER_SSH_KEY_FILE", _text, "ssh action: the worker's private key file (required for `ssh`)"),
    )
    ssh_known_hosts: str | None = field(
        default=None,
        metadata=env(
            "WORKER_SSH_KNOWN_HOSTS",
            _text,
            "ssh action: pinned `known_hosts` file; hosts not in it are refused (required for `ssh`)",
        ),
    )
    ssh_commands: str | None = field(
        default=None,
        metadata=env(
            "WORKER_SSH_COMMANDS", _text, "ssh action: the allow-list, a JSON file (required for `ssh`; see below)"
        ),
    )
    ssh_port: int = field(
        default=22,
        metadata=env(
            "WORKER_SSH_PORT",
            _integer(1, 65535),
            "ssh action: port, unless the account's host names one (`name:port`, `[address]:port`)",
        ),
    )
    ssh_connect_timeout: float = field(
        default=10.0,
        metadata=env(
            "WORKER_SSH_CONNECT_TIMEOUT", _number(lambda v: v > 0, "> 0"), "ssh action: seconds to connect and log in"
        ),
    )
    ssh_run_timeout: float = field(
        default=60.0,
        metadata=env(
            "WORKER_SSH_RUN_TIMEOUT", _number(lambda v: v > 0, "> 0"), "ssh action: seconds a command may run"
        ),
    )
    ssh_max_output: int = field(
        default=4096,
        metadata=env(
            "WORKER_SSH_MAX_OUTPUT",
            _integer(0, 1048576),
            "ssh action: bytes of stdout and of stderr kept (the rest is counted, not kept)",
        ),
    )
    ssh_idle_timeout: float = field(
        default=60.0,
        metadata=env(
            "WORKER_SSH_IDLE_TIMEOUT",
            _number(lambda v: v >= 0, ">= 0"),
            "ssh action: seconds a host's unused connection stays open",
        ),
    )
    ssh_host_concurrency: int = field(
        default=4,
        metadata=env(
            "WORKER_SSH_HOST_CONCURRENCY",
            _integer(1, 10),
            "ssh action: commands at once on one host (channels of its one connection; sshd's MaxSessions is 10)",
        ),
    )

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def secrets(self) -> tuple[str, ...]:
        """Literal values that must never appear in logs (longest first: one may contain another)."""
        found: list[str] = []
        for setting in SETTINGS:
            if setting.secret is not None:
                found.extend(setting.secret.literals(getattr(self, setting.name)))
        return tuple(sorted(found, key=len, reverse=True))

    def __repr__(self) -> str:
        shown: list[str] = []
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret is not None:
                value = setting.secret.show(value)
            shown.append(f"{setting.name}={value!r}")
        return "Config(" + ", ".join(shown) + ")"

    __str__ = __repr__


SETTINGS: tuple[Setting, ...] = tuple(Setting.of(f) for f in fields(Config))
"""Every setting, in Config field order (also the order of the README table)."""


def _check_together(values: Mapping[str, Any]) -> None:
    if values["retry_queue"] == values["queue"]:
        raise ConfigError("WORKER_RETRY_QUEUE must differ from WORKER_QUEUE")
    if values["crash_limit"] >= values["delivery_limit"]:
        raise ConfigError(
            "WORKER_CRASH_LIMIT must be below WORKER_DELIVERY_LIMIT (the worker dead-letters a crashing message "
            "with its reason before the broker's limit drops it without one)"
        )
    if values["action"] == SSH_ACTION:
        for name, variable in (
            ("ssh_key_file", "WORKER_SSH_KEY_FILE"),
            ("ssh_known_hosts", "WORKER_SSH_KNOWN_HOSTS"),
            ("ssh_commands", "WORKER_SSH_COMMANDS"),
        ):
            if not values[name]:
                raise ConfigError(f"{variable} is required when WORKER_ACTION is ssh")
    _check_tls(values)


def _check_tls(values: Mapping[str, Any]) -> None:
    """No TLS setting may be silently ignored, and no URL may turn verification off."""
    if (values["amqp_client_cert"] is None) != (values["amqp_client_key"] is None):
        raise ConfigError("WORKER_AMQP_CLIENT_CERT and WORKER_AMQP_CLIENT_KEY must be set together")
    urls = values["amqp_urls"]
    tls_set = values["amqp_ca_file"] is not None or values["amqp_client_cert"] is not None
    for index, url in enumerate(urls, start=1):
        if "ssl_options" in _query(url):
            raise ConfigError(
                f"WORKER_AMQP_URLS item {index} sets ssl_options: TLS is configured by WORKER_AMQP_CA_FILE "
                "and WORKER_AMQP_CLIENT_CERT/KEY only"
            )
        if tls_set and urlsplit(url).scheme != "amqps":
            raise ConfigError(
                f"WORKER_AMQP_URLS item {index} is not amqps:// although WORKER_AMQP_CA_FILE or "
                "WORKER_AMQP_CLIENT_CERT is set (it would connect unverified)"
            )
    if values["database_ca_file"] is not None:
        given = {k for k in _query(values["database_url"]) if k in ("sslmode", "sslrootcert")}
        if given:
            raise ConfigError(
                f"WORKER_DATABASE_URL sets {', '.join(sorted(given))} although WORKER_DATABASE_CA_FILE is set "
                "(the worker then connects with sslmode=verify-full and that CA)"
            )


def load_config(environ: Mapping[str, str]) -> Config:
    """Build a Config from environ; raise ConfigError naming the offending variable."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.name] = setting.read(environ, values)
    _check_together(values)
    return Config(**values)
