"""Remove secrets from text before it reaches a log line."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
