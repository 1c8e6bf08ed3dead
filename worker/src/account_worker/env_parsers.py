"""Parsers of environment values: (variable name, stripped non-empty text) -> value.

Each raises ConfigError naming the variable; config.py's table says which setting uses
which.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from account_worker.errors import ConfigError

Parser = Callable[[str, str], Any]
"""(variable name, stripped non-empty text) -> value; raises ConfigError naming the variable."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def integer(lo: int, hi: int | None = None) -> Parser:
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


def number(accept: Callable[[float], bool], rule: str) -> Parser:
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


def boolean(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true/false/1/0/yes/no, got {raw!r}")


def text(name: str, raw: str) -> str:
    return raw


def amqp_name(name: str, raw: str) -> str:
    if len(raw) > 255 or any(c.isspace() for c in raw):
        raise ConfigError(f"{name} must be a queue/exchange name without spaces (max 255 chars)")
    return raw


def amqp_urls(name: str, raw: str) -> tuple[str, ...]:
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


def database_url(name: str, raw: str) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must start with postgresql://")
    return raw


def pem_file(name: str, raw: str) -> str:
    if not os.path.isabs(raw):
        raise ConfigError(f"{name} must be an absolute path, got {raw!r}")
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ConfigError(f"{name}: {raw} is not a readable file")
    return raw


def log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level
