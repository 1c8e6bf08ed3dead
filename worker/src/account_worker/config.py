"""Configuration from environment variables only (runit: chpst -e /etc/NAME/env).

The settings are one table, the fields of Config: each is one setting(default, parser,
README text, secret=...), and its environment variable is WORKER_ + the field name
upper-cased.  SETTINGS is read from those fields; load_config(), Config.__repr__,
Config.secrets(), the settings of the batch core and the ssh action, and the README
table test (tests/test_config.py) are all derived from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from account_worker import env_parsers as parsers
from account_worker.env_parsers import Parser
from account_worker.errors import ConfigError
from account_worker.redact import URL_PASSWORD, URL_PASSWORDS, WHOLE_VALUE, Redaction

DEFAULT_ACTION = "account_worker.actions:default_action"
SSH_ACTION = "ssh"  # WORKER_ACTION's name for the built-in SSH action (account_worker.ssh)
RUNIT_KILL_WAIT = 7.0
MAX_TTL_MS = 2**32 - 1  # RabbitMQ per-message TTL upper bound
ENV_PREFIX = "WORKER_"
_META = "setting"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a setting whose variable must be set."""


def env_name(name: str) -> str:
    """The environment variable of the Config field `name`."""
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Setting:
    """One row of the table: Config attribute, default, parser, README text, secrecy.

    default_from computes the default from the settings read before it (the retry queue
    follows the queue); shown_default is the README's text for such a default.
    """

    name: str
    default: Any
    parse: Parser
    doc: str
    secret: Redaction | None = None
    default_from: Callable[[Mapping[str, Any]], str] | None = None
    shown_default: str | None = None

    @property
    def env(self) -> str:
        return env_name(self.name)

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


def setting(
    default: Any,
    parse: Parser,
    doc: str,
    *,
    secret: Redaction | None = None,
    default_from: Callable[[Mapping[str, Any]], str] | None = None,
    shown_default: str | None = None,
) -> Any:
    """A Config field and its row of the table (the name and the variable come from the field)."""
    row = Setting("", default, parse, doc, secret, default_from, shown_default)
    if default is REQUIRED:
        return field(metadata={_META: row})
    return field(default=default, metadata={_META: row})


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _action_path(name: str, raw: str) -> str:
    if raw == SSH_ACTION:
        return raw
    module, sep, attr = raw.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{name} must be 'ssh' or look like 'package.module:function', got {raw!r}")
    return raw


# ---------------------------------------------------------------------------- the settings

_SSH = "ssh action: "


@dataclass(frozen=True, repr=False)
class Config:
    amqp_urls: tuple[str, ...] = setting(
        REQUIRED,
        parsers.amqp_urls,
        "comma-separated `amqp://` / `amqps://` URLs; cluster nodes tried in turn",
        secret=URL_PASSWORDS,
    )
    database_url: str = setting(REQUIRED, parsers.database_url, "`postgresql://` URL", secret=URL_PASSWORD)
    amqp_ca_file: str | None = setting(
        None,
        parsers.pem_file,
        "PEM CA bundle that verifies the broker's certificate on `amqps://` URLs (unset: the system's trust store); "
        "the certificate and the host name are always verified, there is no opt-out; when set, every URL must be "
        "`amqps://`",
    )
    amqp_client_cert: str | None = setting(
        None,
        parsers.pem_file,
        "PEM client certificate presented to the broker (mutual TLS); needs `WORKER_AMQP_CLIENT_KEY`",
    )
    amqp_client_key: str | None = setting(None, parsers.pem_file, "its private key (unencrypted PEM)")
    database_ca_file: str | None = setting(
        None,
        parsers.pem_file,
        "PEM CA bundle; when set, PostgreSQL connections use `sslmode=verify-full` with it (an `sslmode` or "
        "`sslrootcert` in the URL is refused); unset: the URL's own settings",
    )
    queue: str = setting("jobs", parsers.amqp_name, "queue consumed")
    dead_letter_exchange: str = setting(
        "jobs.dlx",
        parsers.amqp_name,
        "fanout exchange for dead letters (DLQ is `<queue>.dlq`)",
        default_from=lambda earlier: f"{earlier['queue']}.dlx",
        shown_default="<queue>.dlx",
    )
    retry_queue: str = setting(
        "jobs.retry",
        parsers.amqp_name,
        "delay queue; messages expire back into `<queue>`",
        default_from=lambda earlier: f"{earlier['queue']}.retry",
        shown_default="<queue>.retry",
    )
    prefetch: int = setting(200, parsers.integer(1, 10000), "basic.qos prefetch, 1..10000")
    batch_size: int = setting(100, parsers.integer(1, 1000), "jobs per database transaction, 1..1000")
    heartbeat: int = setting(30, parsers.integer(5, 600), "AMQP heartbeat seconds, 5..600")
    max_attempts: int = setting(
        5, parsers.integer(1, 100), "attempts before a transient failure is dead-lettered, 1..100"
    )
    delivery_limit: int = setting(
        50,
        parsers.integer(2, 1000),
        "the work queue's `delivery-limit` (its dead-letter policy), 2..1000: returns to the queue after which the "
        "broker itself dead-letters a message",
    )
    crash_limit: int = setting(
        3,
        parsers.integer(1, 100),
        "returns to the queue unsettled (`x-delivery-count`) after which a message is dead-lettered as "
        "`crashed the worker`, 1..100; keep it below the queue's delivery limit",
    )
    retry_delay_ms: int = setting(5000, parsers.integer(0, MAX_TTL_MS), "delay before a retry, >= 0")
    shutdown_grace: float = setting(
        5.0,
        parsers.number(
            lambda v: 0 < v < RUNIT_KILL_WAIT,
            f"> 0 and < {RUNIT_KILL_WAIT:g} (runit kills after {RUNIT_KILL_WAIT:g} s)",
        ),
        "seconds the jobs in flight may take after SIGTERM; > 0 and < 7 (runit)",
    )
    apikey: str | None = setting(
        None, parsers.text, "if set, each message's `apikey` must equal it", secret=WHOLE_VALUE
    )
    action: str = setting(
        DEFAULT_ACTION, _action_path, "`ssh` (run an allow-listed command) or a `module:function` action"
    )
    declare_topology: bool = setting(
        False, parsers.boolean, "declare exchange/queues at start (tests; production uses the rabbitmq role)"
    )
    log_level: str = setting("INFO", parsers.log_level, "DEBUG, INFO, WARNING, ERROR, CRITICAL")
    host_cache_ttl: float = setting(
        30.0, parsers.number(lambda v: v >= 0, ">= 0"), "seconds to cache account hosts; 0 disables"
    )
    metrics_port: int | None = setting(
        None,
        parsers.integer(1, 65535),
        "port of this instance's HTTP server: Prometheus `/metrics` and `/ready` (200 or 503); unset: none",
    )
    metrics_address: str = setting("127.0.0.1", parsers.text, "address the metrics server listens on (`0.0.0.0`: all)")
    metrics_database_check: float = setting(
        10.0,
        parsers.number(lambda v: v >= 1, ">= 1"),
        "seconds between the metrics server's own database pings, made only while no batch has shown the database "
        "answering within that time; >= 1",
    )
    concurrency: int = setting(
        1,
        parsers.integer(1, 256),
        "actions run at once (threads), 1..256; above 1, each run is recorded and acked as it finishes",
        default_from=lambda earlier: "16" if earlier["action"] == SSH_ACTION else "1",
        shown_default="16 with ssh, else 1",
    )
    ssh_user: str = setting("account-jobs", parsers.text, _SSH + "user on the account hosts")
    ssh_key_file: str | None = setting(None, parsers.text, _SSH + "the worker's private key file (required for `ssh`)")
    ssh_known_hosts: str | None = setting(
        None, parsers.text, _SSH + "pinned `known_hosts` file; hosts not in it are refused (required for `ssh`)"
    )
    ssh_commands: str | None = setting(
        None, parsers.text, _SSH + "the allow-list, a JSON file (required for `ssh`; see below)"
    )
    ssh_port: int = setting(
        22,
        parsers.integer(1, 65535),
        _SSH + "port, unless the account's host names one (`name:port`, `[address]:port`)",
    )
    ssh_connect_timeout: float = setting(
        10.0, parsers.number(lambda v: v > 0, "> 0"), _SSH + "seconds to connect and log in"
    )
    ssh_run_timeout: float = setting(60.0, parsers.number(lambda v: v > 0, "> 0"), _SSH + "seconds a command may run")
    ssh_max_output: int = setting(
        4096, parsers.integer(0, 1048576), _SSH + "bytes of stdout and of stderr kept (the rest is counted, not kept)"
    )
    ssh_idle_timeout: float = setting(
        60.0, parsers.number(lambda v: v >= 0, ">= 0"), _SSH + "seconds a host's unused connection stays open"
    )
    ssh_host_concurrency: int = setting(
        4,
        parsers.integer(1, 10),
        _SSH + "commands at once on one host (channels of its one connection; sshd's MaxSessions is 10)",
    )

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def secrets(self) -> tuple[str, ...]:
        """Literal values that must never appear in logs (longest first: one may contain another)."""
        found: list[str] = []
        for row in SETTINGS:
            if row.secret is not None:
                found.extend(row.secret.literals(getattr(self, row.name)))
        return tuple(sorted(found, key=len, reverse=True))

    def __repr__(self) -> str:
        shown: list[str] = []
        for row in SETTINGS:
            value = getattr(self, row.name)
            if row.secret is not None:
                value = row.secret.show(value)
            shown.append(f"{row.name}={value!r}")
        return "Config(" + ", ".join(shown) + ")"

    __str__ = __repr__


SETTINGS: tuple[Setting, ...] = tuple(replace(f.metadata[_META], name=f.name) for f in fields(Config))
"""Every setting, in Config field order (also the order of the README table)."""


def _check_together(values: Mapping[str, Any]) -> None:
    if values["retry_queue"] == values["queue"]:
        raise ConfigError(f"{env_name('retry_queue')} must differ from {env_name('queue')}")
    if values["crash_limit"] >= values["delivery_limit"]:
        raise ConfigError(
            f"{env_name('crash_limit')} must be below {env_name('delivery_limit')} (the worker dead-letters a "
            "crashing message with its reason before the broker's limit drops it without one)"
        )
    if values["action"] == SSH_ACTION:
        for name in ("ssh_key_file", "ssh_known_hosts", "ssh_commands"):
            if not values[name]:
                raise ConfigError(f"{env_name(name)} is required when {env_name('action')} is ssh")
    _check_tls(values)


def _check_tls(values: Mapping[str, Any]) -> None:
    """No TLS setting may be silently ignored, and no URL may turn verification off."""
    urls_var, ca_var, cert_var = env_name("amqp_urls"), env_name("amqp_ca_file"), env_name("amqp_client_cert")
    if (values["amqp_client_cert"] is None) != (values["amqp_client_key"] is None):
        raise ConfigError(f"{cert_var} and {env_name('amqp_client_key')} must be set together")
    tls_set = values["amqp_ca_file"] is not None or values["amqp_client_cert"] is not None
    for index, url in enumerate(values["amqp_urls"], start=1):
        if "ssl_options" in _query(url):
            raise ConfigError(
                f"{urls_var} item {index} sets ssl_options: TLS is configured by {ca_var} and {cert_var}/KEY only"
            )
        if tls_set and urlsplit(url).scheme != "amqps":
            raise ConfigError(
                f"{urls_var} item {index} is not amqps:// although {ca_var} or {cert_var} is set "
                "(it would connect unverified)"
            )
    if values["database_ca_file"] is not None:
        given = {k for k in _query(values["database_url"]) if k in ("sslmode", "sslrootcert")}
        if given:
            raise ConfigError(
                f"{env_name('database_url')} sets {', '.join(sorted(given))} although "
                f"{env_name('database_ca_file')} is set (the worker then connects with sslmode=verify-full and that CA)"
            )


def load_config(environ: Mapping[str, str]) -> Config:
    """Build a Config from environ; raise ConfigError naming the offending variable."""
    values: dict[str, Any] = {}
    for row in SETTINGS:
        values[row.name] = row.read(environ, values)
    _check_together(values)
    return Config(**values)
