"""TLS of the worker's connections: settings, the amqps:// client context, and real handshakes
against a local TLS listener with throwaway CAs (made with the openssl command)."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from account_worker import amqp
from account_worker.config import load_config
from account_worker.db import Database
from account_worker.errors import ConfigError
from account_worker.logsetup import setup_logging
from fakes import Connector


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
    )  # fmt: skip
    return crt, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    crt, key, csr, ext = (directory / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text(f"subjectAltName={san}\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return crt, key


@dataclass
class Pki:
    ca: Path  # signed the server's and the client's certificates
    other_ca: Path  # signed nothing the server presents
    server: tuple[Path, Path]
    wrong_name_server: tuple[Path, Path]
    client: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = _ca(d, "ca"), _ca(d, "other-ca")
    return Pki(
        ca=ca[0],
        other_ca=other[0],
        server=_leaf(d, "broker", ca, "DNS:localhost,IP:127.0.0.1"),
        wrong_name_server=_leaf(d, "elsewhere", ca, "DNS:elsewhere.example"),
        client=_leaf(d, "worker", ca, "DNS:worker"),
    )


class TlsListener:
    """Accepts TLS connections; records the first bytes each client sends after the handshake."""

    def __init__(self, cert: tuple[Path, Path], client_ca: Path | None = None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*cert)
        if client_ca is not None:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.peer_names: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert()
                    if peer:
                        self.peer_names.append(dict(x[0] for x in peer["subject"])["commonName"])
                    self.received.append(tls.recv(8))  # the AMQP protocol header, then hang up
            except (ssl.SSLError, OSError):
                continue

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(pki: Pki) -> Iterator[TlsListener]:
    server = TlsListener(pki.server)
    yield server
    server.close()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"WORKER_AMQP_URLS": url, "WORKER_DATABASE_URL": "postgresql://w:dbpw1secret@db/accounts", **extra}


def _connect_twice(cfg) -> tuple[list[str], list[float]]:
    """Two rounds of amqp.connect with the real pika connection; returns the log lines and the waits."""
    stream = io.StringIO()
    log = setup_logging("INFO", cfg.secrets(), stream=stream)
    waits: list[float] = []
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            stop.set()

    try:
        assert amqp.connect(cfg, stop, sleep=sleep, random=lambda: 0.5, logger=log) is None
    finally:
        log.handlers.clear()
    return stream.getvalue().splitlines(), waits


# ---------------------------------------------------------------------------- settings


def test_tls_settings_parsed(pki: Pki):
    cfg = load_config(
        _env(
            "amqps://w:pw1secret@broker/vh",
            WORKER_AMQP_CA_FILE=str(pki.ca),
            WORKER_AMQP_CLIENT_CERT=str(pki.client[0]),
            WORKER_AMQP_CLIENT_KEY=str(pki.client[1]),
            WORKER_DATABASE_CA_FILE=str(pki.ca),
        )
    )
    assert (cfg.amqp_ca_file, cfg.database_ca_file) == (str(pki.ca), str(pki.ca))
    assert (cfg.amqp_client_cert, cfg.amqp_client_key) == (str(pki.client[0]), str(pki.client[1]))


def test_tls_settings_default_to_unset():
    cfg = load_config(_env("amqp://w:pw1secret@broker/vh"))
    assert (cfg.amqp_ca_file, cfg.amqp_client_cert, cfg.amqp_client_key, cfg.database_ca_file) == (None,) * 4


@pytest.mark.parametrize(
    ("extra", "url", "message"),
    [
        ({"WORKER_AMQP_CA_FILE": "ca.crt"}, "amqps://b/", "WORKER_AMQP_CA_FILE must be an absolute path"),
        ({"WORKER_AMQP_CA_FILE": "/nonexistent/ca.crt"}, "amqps://b/", "is not a readable file"),
        ({"WORKER_AMQP_CLIENT_CERT": "{ca}"}, "amqps://b/", "must be set together"),
        ({"WORKER_AMQP_CLIENT_KEY": "{ca}"}, "amqps://b/", "must be set together"),
        ({"WORKER_AMQP_CA_FILE": "{ca}"}, "amqps://a/,amqp://b/", "item 2 is not amqps://"),
        ({}, "amqps://b/?ssl_options=%7B%7D", "item 1 sets ssl_options"),
        ({"WORKER_DATABASE_CA_FILE": "{ca}", "WORKER_DATABASE_URL": "postgresql://db/a?sslmode=require"}, "amqp://b/",
         "WORKER_DATABASE_URL sets sslmode"),
    ],
)  # fmt: skip
def test_tls_settings_refused(pki: Pki, extra: dict[str, str], url: str, message: str):
    env = _env(url, **{k: v.format(ca=pki.ca) for k, v in extra.items()})
    with pytest.raises(ConfigError, match=message):
        load_config(env)


# ---------------------------------------------------------------------------- the client context


def test_amqps_context_always_verifies_chain_and_host_name(pki: Pki):
    for extra in ({}, {"WORKER_AMQP_CA_FILE": str(pki.ca)}):
        cfg = load_config(_env("amqps://w:pw1secret@broker.example:5671/vh", **extra))
        params = amqp.connection_parameters(cfg.amqp_urls[0], cfg)
        context = params.ssl_options.context
        assert params.ssl_options.server_hostname == "broker.example"
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_plain_amqp_has_no_tls(pki: Pki):
    cfg = load_config(_env("amqp://w:pw1secret@broker/vh"))
    assert amqp.connection_parameters(cfg.amqp_urls[0], cfg).ssl_options is None


# ---------------------------------------------------------------------------- real handshakes


def test_the_right_ca_completes_the_handshake(pki: Pki, listener: TlsListener):
    cfg = load_config(_env(f"amqps://w:pw1secret@localhost:{listener.port}/vh", WORKER_AMQP_CA_FILE=str(pki.ca)))
    lines, _ = _connect_twice(cfg)
    assert listener.received[:1] == [b"AMQP\x00\x00\x09\x01"]  # verified, then spoke AMQP
    assert not any("amqp_tls_refused" in line for line in lines)


def test_a_broker_from_another_ca_is_refused_with_one_clear_line_and_retried(pki: Pki, listener: TlsListener):
    url = f"amqps://w:secretpw@127.0.0.1:{listener.port}/vh"
    cfg = load_config(_env(url, WORKER_AMQP_CA_FILE=str(pki.other_ca)))
    lines, waits = _connect_twice(cfg)
    refused = [line for line in lines if "event=amqp_tls_refused" in line]
    assert len(refused) == 2, lines  # one line per attempt, and the loop kept going
    assert refused[0].startswith("level=ERROR event=amqp_tls_refused")
    assert f"broker=127.0.0.1:{listener.port}" in refused[0]
    assert 'error="certificate verify failed: unable to get local issuer certificate"' in refused[0]
    assert "secretpw" not in "\n".join(lines)
    assert len(waits) == 2 and listener.received == []


def test_a_certificate_for_another_name_is_refused(pki: Pki):
    server = TlsListener(pki.wrong_name_server)
    try:
        cfg = load_config(_env(f"amqps://w:pw1secret@127.0.0.1:{server.port}/vh", WORKER_AMQP_CA_FILE=str(pki.ca)))
        lines, _ = _connect_twice(cfg)
    finally:
        server.close()
    refused = [line for line in lines if "event=amqp_tls_refused" in line]
    assert refused and "mismatch, certificate is not valid for" in refused[0]
    assert server.received == []


def test_mutual_tls_presents_the_client_certificate(pki: Pki):
    server = TlsListener(pki.server, client_ca=pki.ca)
    try:
        env = _env(
            f"amqps://w:pw1secret@localhost:{server.port}/vh",
            WORKER_AMQP_CA_FILE=str(pki.ca),
            WORKER_AMQP_CLIENT_CERT=str(pki.client[0]),
            WORKER_AMQP_CLIENT_KEY=str(pki.client[1]),
        )
        _connect_twice(load_config(env))
        without = _env(f"amqps://w:pw1secret@localhost:{server.port}/vh", WORKER_AMQP_CA_FILE=str(pki.ca))
        _connect_twice(load_config(without))
    finally:
        server.close()
    assert server.peer_names[:1] == ["worker"]
    assert len(server.received) == 2  # only the connections that presented the certificate got through


# ---------------------------------------------------------------------------- PostgreSQL


def test_database_ca_means_verify_full():
    connector = Connector(lambda sql, params: [])
    Database("postgresql://x", connect=connector, ca_file="/etc/w/db-ca.crt").lookup_hosts(["a"])
    assert connector.kwargs["sslmode"] == "verify-full"
    assert connector.kwargs["sslrootcert"] == "/etc/w/db-ca.crt"


def test_no_database_ca_leaves_the_url_alone():
    connector = Connector(lambda sql, params: [])
    Database("postgresql://x", connect=connector).lookup_hosts(["a"])
    assert "sslmode" not in connector.kwargs and "sslrootcert" not in connector.kwargs
