"""Remove secrets from text before it reaches a log line; how a secret setting is shown and hidden."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MASK = "***"

# scheme://user:password@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)")
# apikey=..., "apikey": "...", 'apikey': '...', apikey: ...
_APIKEY = re.compile(
    r"""(?P<head>(?P<q>["']?)apikey(?P=q)\s*[:=]\s*)(?P<vq>["']?)(?P<val>[^"'\s,}&]+)(?P=vq)""",
    re.IGNORECASE,
)
# password=... in libpq keyword/value strings and query parameters
_PASSWORD_KV = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<val>[^\s&]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return url with its password (if any) replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", url)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact URL passwords, apikey values, password= pairs and any literal secret."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    text = _APIKEY.sub(lambda m: f"{m['head']}{m['vq']}{MASK}{m['vq']}", text)
    return _PASSWORD_KV.sub(lambda m: f"{m['head']}{MASK}", text)


@dataclass(frozen=True)
class Redaction:
    """How a secret setting is shown (repr) and which literal strings it hides in logs."""

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
