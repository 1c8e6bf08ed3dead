"""The rabbitmq role's TLS prechecks: a bad certificate, key or CA fails before any
change, with a sentence naming the file and the problem.

Certificates are made here with `cryptography` (an Ansible dependency of the
controller); the role runs against an unreachable host, as in
test_argument_specs.py: the TLS checks run on the controller, so a case that got
past them would show up as `unreachable`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from role_runner import broker, run_role

HOST = "unreachable-host"  # the inventory host of run_role
NOW = datetime.datetime.now(datetime.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    key: ec.EllipticCurvePrivateKey,
    names: list[str],
    days: int = 365,
) -> x509.Certificate:
    ca_cert, ca_key = ca
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _pem(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _files(directory: Path, case: str) -> dict[str, str]:
    """cert.pem, key.pem, ca.pem in `directory`, right except for what `case` breaks."""
    ca, other_ca = _ca("test CA"), _ca("another CA")
    key = _key()
    cert = {
        "good": lambda: _leaf(ca, key, [HOST]),
        "key does not match": lambda: _leaf(ca, _key(), [HOST]),
        "signed by another CA": lambda: _leaf(other_ca, key, [HOST]),
        "names another host": lambda: _leaf(ca, key, ["other-host.example.net"]),
        "expires too soon": lambda: _leaf(ca, key, [HOST], days=10),
    }.get(case, lambda: _leaf(ca, key, [HOST]))()
    contents = {"cert.pem": _pem(cert), "key.pem": _pem(key), "ca.pem": _pem(ca[0])}
    if case == "certificate not PEM":
        contents["cert.pem"] = b"not a certificate\n"
    for name, content in contents.items():
        (directory / name).write_bytes(content)
    return {
        "rabbitmq_tls_certificate_src": str(directory / "cert.pem"),
        "rabbitmq_tls_private_key_src": str(directory / "key.pem"),
        "rabbitmq_tls_ca_certificates_src": str(directory / "ca.pem"),
    }


# case -> (the file the message must name, the words of the problem)
BAD = {
    "key does not match": ("cert.pem", "does not match its key"),
    "signed by another CA": ("cert.pem", "does not verify against the CA certificates"),
    "names another host": ("cert.pem", f"does not cover {HOST}"),
    "expires too soon": ("cert.pem", "rabbitmq_tls_min_days (30)"),
    "certificate not PEM": ("cert.pem", "cannot be read"),
    "key file missing": ("key.pem", "does not exist on the controller"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_certificates_fail_before_any_change(tmp_path: Path, case: str) -> None:
    tls = _files(tmp_path, case)
    if case == "key file missing":
        (tmp_path / "key.pem").unlink()
    result = run_role(tmp_path, "rabbitmq", broker(**tls))
    output = " ".join((result.stdout + result.stderr).split())  # messages wrap
    file, problem = BAD[case]
    assert result.returncode == 2, output
    assert str(tmp_path / file) in output, f"the message does not name {file}:\n{output}"
    assert problem in output, f"{problem!r} not in the output:\n{output}"
    assert "changed=0" in output and "unreachable=0" in output, output
    assert "BEGIN PRIVATE KEY" not in output, "the key leaked into the output"


def test_inter_node_tls_needs_the_node_host_in_the_certificate(tmp_path: Path) -> None:
    """The other nodes and the CLI tools verify the node's host name: a certificate valid for the
    names clients use but not for the node's host is refused for inter-node TLS."""
    tls = _files(tmp_path, "good")
    result = run_role(
        tmp_path,
        "rabbitmq",
        broker(**tls, rabbitmq_tls_inter_node=True, rabbitmq_nodename="rabbit@node-1.internal"),
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert f"{tmp_path / 'cert.pem'}" in output and "does not cover node-1.internal" in output, output
    assert "changed=0" in output and "unreachable=0" in output, output


def test_good_certificates_pass_the_prechecks(tmp_path: Path) -> None:
    """The control: the same files, right, get past every TLS check to the first task on the host."""
    result = run_role(tmp_path, "rabbitmq", broker(**_files(tmp_path, "good")))
    output = result.stdout + result.stderr
    assert "unreachable=1" in output, output
    assert "failed=0" in output, output
    assert "Check that the certificate stays valid long enough" in output, output


def test_key_content_never_shown(tmp_path: Path) -> None:
    tls = _files(tmp_path, "key does not match")
    key = (tmp_path / "key.pem").read_text()
    changes = {
        "rabbitmq_tls_private_key_src": None,
        "rabbitmq_tls_private_key": key,
    }
    result = run_role(tmp_path, "rabbitmq", broker(**(tls | changes)))
    output = result.stdout + result.stderr
    assert "does not match its key" in " ".join(output.split()), output
    body = "".join(key.strip().splitlines()[1:-1])
    assert body[:40] not in output.replace("\n", "").replace(" ", ""), "the key leaked into the output"
