"""Where the benchmarks find the sandbox's broker and database, and the checks on those addresses.

BENCH_AMQP_URL / BENCH_DATABASE_URL override the sandbox's (passwords read from .sandbox/);
BENCH_AMQPS_PORT the broker's AMQPS port (default 5671), BENCH_CA_FILE the CA that verifies it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

SANDBOX = Path(__file__).resolve().parents[1] / ".sandbox"


def _sandbox_secret(name: str) -> str:
    return (SANDBOX / name).read_text(encoding="utf-8").strip()


def default_amqp_url() -> str:
    return os.environ.get("BENCH_AMQP_URL") or (
        f"amqp://app:{quote(_sandbox_secret('rabbitmq_app_password'), safe='')}@127.0.0.1:5672/app"
    )


def default_database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or (
        f"postgresql://worker:{quote(_sandbox_secret('postgresql_worker_password'), safe='')}@127.0.0.1:5432/accounts"
    )


def default_ca_file() -> str:
    """The CA that verifies the broker over AMQPS: BENCH_CA_FILE, else the sandbox's."""
    return os.environ.get("BENCH_CA_FILE") or str(SANDBOX / "tls" / "ca.crt")


def database_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def with_address(url: str, address: str) -> str:
    """`url` with its host:port replaced by `address` (credentials, database and options kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo}{at}{address}").geturl()


def amqps_url(url: str) -> str:
    """The same broker and credentials as `url`, over AMQPS."""
    parts = urlsplit(url)
    port = int(os.environ.get("BENCH_AMQPS_PORT") or 5671)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(scheme="amqps", netloc=f"{userinfo}{at}{parts.hostname}:{port}").geturl()


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"{what} must point at a loopback address, got host {host!r}")
