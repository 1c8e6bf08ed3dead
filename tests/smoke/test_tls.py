"""TLS from the outside: what a client that should be refused is refused, and why.

Each check skips only when it does not apply to the target (a plaintext URL, a
broker that is not TLS-only, no mutual TLS asked for); where it applies it fails
when the broker lets the client through, or refuses it for another reason than
the one under test.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pika
import pika.credentials
import pytest

from smoke_amqp import close_quietly
from smoke_management import Management, poll
from smoke_settings import Target, TlsChecks

# A CA no broker's certificate comes from (self-signed, its key thrown away):
# a client that trusts only it must refuse every broker.
OTHER_CA = """\
-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUYc6unX0C976dDsJk41eHqCV3XwwwCgYIKoZIzj0EAwIw
LjEsMCoGA1UEAwwjc21va2UgdGVzdCBDQSB0aGF0IHNpZ25lZCBubyBicm9rZXIw
IBcNMjYxMTI1MTUwMzI3WhgPMjEyNjExMDExNTAzMjdaMC4xLDAqBgNVBAMMI3Nt
b2tlIHRlc3QgQ0EgdGhhdCBzaWduZWQgbm8gYnJva2VyMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAETRiYenS66rSuebOj2aXjeWjwKW4kSae9rmJwWLCalx3BW3RB
QUQbIp3Y1R9pjpl0uU+orNWyA24b9ec8Ibp9XKNTMFEwHQYDVR0OBBYEFNYj+X6p
QqROj1b+WXjpmzemtQU0MB8GA1UdIwQYMBaAFNYj+X6pQqROj1b+WXjpmzemtQU0
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgAiVU5yEwW5CqJvhL
zCxVWxeGgOVEiwZI+6BQS6W06pcCIQDQuQRcVrOHUXAQN/udD7Msub7xLRGM9y3K
drbmGAoD7A==
-----END CERTIFICATE-----
"""

# OpenSSL's verify codes for "the chain does not lead to a trusted CA".
UNTRUSTED = {2, 19, 20, 21}

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
HTTP_REQUEST = b"GET /api/overview HTTP/1.0\r\n\r\n"

# TLSv1 and TLSv1.1 as the record layer spells them (ClientHello.client_version).
OLD_VERSIONS = {"TLSv1": (ssl.TLSVersion.TLSv1, 0x0301), "TLSv1.1": (ssl.TLSVersion.TLSv1_1, 0x0302)}


def endpoint(target: Target, which: str) -> tuple[str, int]:
    """(host, port) of the AMQPS or HTTPS endpoint; skip when that URL is plaintext."""
    if which == "amqps":
        if not target.tls:
            pytest.skip("the AMQP URL is not amqps://")
        return target.amqp_host, target.amqp_port
    if not target.management_tls:
        pytest.skip("the management URL is not https://")
    return target.management_host, target.management_port


@contextmanager
def tls_socket(context: ssl.SSLContext, host: str, port: int, timeout: float) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        yield tls


def first_answer(sock: socket.socket | ssl.SSLSocket, request: bytes) -> bytes:
    """Send the request, return the first bytes of the answer (b"" when the peer closed)."""
    sock.sendall(request)
    return sock.recv(64)


# -- plaintext refused in TLS-only mode ------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "request_bytes", "speaks"),
    [("AMQP", AMQP_HEADER, b"\x01\x00\x00"), ("HTTP", HTTP_REQUEST, b"HTTP/")],
    ids=["amqp", "http"],
)
def test_plaintext_ports_refuse_in_tls_only_mode(
    target: Target, tls_checks: TlsChecks, what: str, request_bytes: bytes, speaks: bytes
) -> None:
    if not tls_checks.tls_only:
        pytest.skip("the broker is not TLS-only (SMOKE_TLS_ONLY)")
    if what == "AMQP":
        host, port = target.amqp_host, tls_checks.plain_amqp_port
    else:
        host, port = target.management_host, tls_checks.plain_management_port
    try:
        with socket.create_connection((host, port), timeout=target.timeout) as sock:
            answer = first_answer(sock, request_bytes)
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return  # refused: what TLS-only means
    except TimeoutError:
        pytest.fail(f"{host}:{port} accepted a connection and kept it open without answering (a filter, not TLS-only?)")
    assert not answer.startswith(speaks), f"a plaintext {what} listener answered on {host}:{port}: {answer!r}"
    assert answer == b"", f"{host}:{port} answered {answer!r} to plaintext {what}"


# -- a client that trusts another CA ---------------------------------------------------------


@pytest.mark.parametrize("which", ["amqps", "https"])
def test_client_trusting_another_ca_is_refused(target: Target, which: str) -> None:
    host, port = endpoint(target, which)
    # The control: the configured CA verifies this endpoint.
    with tls_socket(target.ssl_context(), host, port, target.timeout) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    other = ssl.create_default_context(cadata=OTHER_CA)
    with pytest.raises(ssl.SSLCertVerificationError) as refused, tls_socket(other, host, port, target.timeout):
        pass
    assert refused.value.verify_code in UNTRUSTED, f"refused for another reason: {refused.value}"


# -- old protocol versions -------------------------------------------------------------------


def old_version_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers only `version`. OpenSSL 3 offers nothing below TLSv1.2 at its
    default security level: level 0 lets it offer the old version for real."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers("DEFAULT@SECLEVEL=0")
    return context


def offered_version(context: ssl.SSLContext) -> int:
    """The protocol version of the ClientHello this context sends (handshake in memory,
    no server): proves the client really offers the old version."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="control.invalid")
    with suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    # TLS record (type 22, handshake), then a ClientHello (type 1); client_version at 9..10.
    assert len(hello) > 11 and hello[0] == 0x16 and hello[5] == 0x01, f"no ClientHello was sent: {hello[:16]!r}"
    return int.from_bytes(hello[9:11], "big")


@pytest.mark.parametrize("version_name", list(OLD_VERSIONS))
@pytest.mark.parametrize("which", ["amqps", "https"])
def test_old_protocol_versions_are_refused(target: Target, which: str, version_name: str) -> None:
    host, port = endpoint(target, which)
    version, wire = OLD_VERSIONS[version_name]
    context = old_version_context(version)
    assert offered_version(context) == wire, f"the control failed: this client does not offer {version_name}"
    try:
        with tls_socket(context, host, port, target.timeout) as tls:
            pytest.fail(f"{host}:{port} accepted a {tls.version()} handshake")
    except ssl.SSLError as exc:
        # The server's protocol_version alert, not a refusal on this side.
        assert exc.reason == "TLSV1_ALERT_PROTOCOL_VERSION", f"refused for another reason: {exc}"


# -- mutual TLS ------------------------------------------------------------------------------


def test_client_without_certificate_is_refused_in_mutual_tls(target: Target, tls_checks: TlsChecks) -> None:
    if not tls_checks.mutual:
        pytest.skip("the broker does not require client certificates (SMOKE_TLS_MUTUAL)")
    host, port = endpoint(target, "amqps")
    context = ssl.create_default_context(cafile=target.ca_file)  # verifies the broker, presents nothing
    try:
        with tls_socket(context, host, port, target.timeout) as tls:
            # TLSv1.3: the server's refusal arrives after the client's side of the handshake.
            answer = first_answer(tls, AMQP_HEADER)
    except ssl.SSLError as exc:
        assert exc.reason in {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}, (
            f"refused for another reason: {exc}"
        )
        return
    except (ConnectionResetError, BrokenPipeError):
        return
    assert answer == b"", f"{host}:{port} spoke AMQP to a client without a certificate: {answer!r}"


def test_certificate_login_names_the_user(
    target: Target, tls_checks: TlsChecks, params: pika.URLParameters, management: Management
) -> None:
    if not tls_checks.external_user:
        pytest.skip("certificate login is not expected (SMOKE_TLS_EXTERNAL_USER)")
    if not (target.tls and target.client_cert):
        pytest.fail("SMOKE_TLS_EXTERNAL_USER needs an amqps:// URL and SMOKE_CLIENT_CERT")
    params.credentials = pika.credentials.ExternalCredentials()
    name = params.client_properties["connection_name"]
    connection = pika.BlockingConnection(params)
    try:
        listed = poll(
            lambda: [
                c
                for c in management.json("connections", columns="user,user_provided_name,auth_mechanism")
                if c.get("user_provided_name") == name
            ],
            timeout=max(5.0, target.timeout),
        )
    finally:
        close_quietly(connection)
    assert listed, f"the connection {name!r} never showed in the management API"
    assert (listed[0]["user"], listed[0]["auth_mechanism"]) == (tls_checks.external_user, "EXTERNAL")


# -- expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["amqps", "https"])
def test_served_certificate_is_not_about_to_expire(
    target: Target, tls_checks: TlsChecks, which: str, notes: list[str]
) -> None:
    """A warning, not a failure: the broker still works, but its certificate needs renewing."""
    host, port = endpoint(target, which)
    with tls_socket(target.ssl_context(), host, port, target.timeout) as tls:
        cert = tls.getpeercert()
    assert cert, "the broker presented no certificate"
    days = (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400
    if days < tls_checks.min_days:
        message = (
            f"the certificate served on {host}:{port} expires in {days:.0f} days ({cert['notAfter']}), "
            f"within SMOKE_TLS_MIN_DAYS={tls_checks.min_days}: renew it"
        )
        warnings.warn(message, stacklevel=1)
        notes.append(message)
