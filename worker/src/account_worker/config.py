"""Configuration from environment variables only (runit: chpst -e /etc/NAME/env)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from account_worker.errors import ConfigError
from account_worker.redact import MASK, redact_url

DEFAULT_ACTION = "account_worker.actions:default_action"
RUNIT_KILL_WAIT = 7.0
MAX_TTL_MS = 2**32 - 1  # RabbitMQ per-message TTL upper bound
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, repr=False)
class Config:
    amqp_urls: tuple[str, ...]
    database_url: str
    queue: str = "jobs"
    dead_letter_exchange: str = "jobs.dlx"
    retry_queue: str = "jobs.retry"
    prefetch: int = 100
    batch_size: int = 50
    heartbeat: int = 30
    max_attempts: int = 5
    retry_delay_ms: int = 5000
    shutdown_grace: float = 5.0
    apikey: str | None = None
    action: str = DEFAULT_ACTION
    declare_topology: bool = False
    log_level: str = "INFO"
    host_cache_ttl: float = 30.0

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def secrets(self) -> tuple[str, ...]:
        """Literal values that must never appear in logs."""
        found = [self.apikey or ""]
        for url in (*self.amqp_urls, self.database_url):
            password = urlsplit(url).password
            if password:
                found.append(password)
        return tuple(s for s in found if s)

    def __repr__(self) -> str:
        shown = {
            "amqp_urls": tuple(redact_url(u) for u in self.amqp_urls),
            "database_url": redact_url(self.database_url),
            "queue": self.queue,
            "dead_letter_exchange": self.dead_letter_exchange,
            "retry_queue": self.retry_queue,
            "prefetch": self.prefetch,
            "batch_size": self.batch_size,
            "heartbeat": self.heartbeat,
            "max_attempts": self.max_attempts,
            "retry_delay_ms": self.retry_delay_ms,
            "shutdown_grace": self.shutdown_grace,
            "apikey": MASK if self.apikey else None,
            "action": self.action,
            "declare_topology": self.declare_topology,
            "log_level": self.log_level,
            "host_cache_ttl": self.host_cache_ttl,
        }
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _required(environ: Mapping[str, str], name: str) -> str:
    value = _get(environ, name)
    if value is None:
        raise ConfigError(f"{name} is required")
    return value


def _int(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = _get(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(environ, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true/false/1/0/yes/no, got {raw!r}")


def _name(environ: Mapping[str, str], name: str, default: str) -> str:
    value = _get(environ, name) or default
    if len(value) > 255 or any(c.isspace() for c in value):
        raise ConfigError(f"{name} must be a queue/exchange name without spaces (max 255 chars)")
    return value


def _amqp_urls(environ: Mapping[str, str]) -> tuple[str, ...]:
    name = "WORKER_AMQP_URLS"
    raw = _required(environ, name)
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


def _database_url(environ: Mapping[str, str]) -> str:
    name = "WORKER_DATABASE_URL"
    url = _required(environ, name)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must start with postgresql://")
    return url


def _action(environ: Mapping[str, str]) -> str:
    name = "WORKER_ACTION"
    value = _get(environ, name) or DEFAULT_ACTION
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{name} must look like 'package.module:function', got {value!r}")
    return value


def load_config(environ: Mapping[str, str]) -> Config:
    """Build a Config from environ; raise ConfigError naming the offending variable."""
    amqp_urls = _amqp_urls(environ)
    database_url = _database_url(environ)
    queue = _name(environ, "WORKER_QUEUE", "jobs")
    dead_letter_exchange = _name(environ, "WORKER_DEAD_LETTER_EXCHANGE", "jobs.dlx")
    retry_queue = _name(environ, "WORKER_RETRY_QUEUE", f"{queue}.retry")
    if retry_queue == queue:
        raise ConfigError("WORKER_RETRY_QUEUE must differ from WORKER_QUEUE")

    shutdown_grace = _float(environ, "WORKER_SHUTDOWN_GRACE", 5.0)
    if not 0 < shutdown_grace < RUNIT_KILL_WAIT:
        raise ConfigError(
            f"WORKER_SHUTDOWN_GRACE must be > 0 and < {RUNIT_KILL_WAIT:g} (runit kills after 7 s), "
            f"got {shutdown_grace:g}"
        )
    host_cache_ttl = _float(environ, "WORKER_HOST_CACHE_TTL", 30.0)
    if host_cache_ttl < 0:
        raise ConfigError(f"WORKER_HOST_CACHE_TTL must be >= 0, got {host_cache_ttl:g}")

    log_level = (_get(environ, "WORKER_LOG_LEVEL") or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"WORKER_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}")

    return Config(
        amqp_urls=amqp_urls,
        database_url=database_url,
        queue=queue,
        dead_letter_exchange=dead_letter_exchange,
        retry_queue=retry_queue,
        prefetch=_int(environ, "WORKER_PREFETCH", 100, 1, 10000),
        batch_size=_int(environ, "WORKER_BATCH_SIZE", 50, 1, 1000),
        heartbeat=_int(environ, "WORKER_HEARTBEAT", 30, 5, 600),
        max_attempts=_int(environ, "WORKER_MAX_ATTEMPTS", 5, 1, 100),
        retry_delay_ms=_int(environ, "WORKER_RETRY_DELAY_MS", 5000, 0, MAX_TTL_MS),
        shutdown_grace=shutdown_grace,
        apikey=_get(environ, "WORKER_APIKEY"),
        action=_action(environ),
        declare_topology=_bool(environ, "WORKER_DECLARE_TOPOLOGY", False),
        log_level=log_level,
        host_cache_ttl=host_cache_ttl,
    )
