"""The rabbitmq role's TLS prechecks: a bad certificate, key or CA fails before any
change, with a sentence naming the file and the problem.

Certificates are made here with `cryptography` (an Ansible dependency of the
controller); the role runs against unreachable hosts, as in
test_argument_specs.py: the TLS checks run on the controller, so a case that got
past them would show up as `unreachable`. All cases run in one ansible-playbook run,
one inventory host per case (role_runner.run_cases), each with its own files made
for its own host name.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from role_runner import HostResult, broker, host_name, run_cases

pytestmark = pytest.mark.ansible

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


def _files(directory: Path, case: str, host: str) -> dict[str, str]:
    """cert.pem, key.pem, ca.pem in `directory` for inventory host `host`, right except for what `case` breaks."""
    ca, other_ca = _ca("test CA"), _ca("another CA")
    key = _key()
    cert = {
        "good": lambda: _leaf(ca, key, [host]),
        "key does not match": lambda: _leaf(ca, _key(), [host]),
        "signed by another CA": lambda: _leaf(other_ca, key, [host]),
        "names another host": lambda: _leaf(ca, key, ["other-host.example.net"]),
        "expires too soon": lambda: _leaf(ca, key, [host], days=10),
    }.get(case, lambda: _leaf(ca, key, [host]))()
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


# case -> (the file the message must name, the words of the problem; {host}: the case's inventory host)
BAD = {
    "key does not match": ("cert.pem", "does not match its key"),
    "signed by another CA": ("cert.pem", "does not verify against the CA certificates"),
    "names another host": ("cert.pem", "does not cover {host}"),
    "expires too soon": ("cert.pem", "rabbitmq_tls_min_days (30)"),
    "certificate not PEM": ("cert.pem", "cannot be read"),
    "key file missing": ("key.pem", "does not exist on the controller"),
}


INTER_NODE = "inter-node TLS, the node's host not in the certificate"
GOOD = "good certificates"
KEY_CONTENT = "key given as content, not matching"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[HostResult, Path]]:
    """Every case of this module, by case, from one ansible-playbook run: its host's results and the
    directory of its files."""
    cases: dict[str, dict] = {}
    for case in BAD:
        directory = tmp_path_factory.mktemp(host_name(case))
        tls = _files(directory, case, host_name(case))
        if case == "key file missing":
            (directory / "key.pem").unlink()
        cases[case] = broker(**tls)
    directory = tmp_path_factory.mktemp(host_name(INTER_NODE))
    cases[INTER_NODE] = broker(
        **_files(directory, "good", host_name(INTER_NODE)),
        rabbitmq_tls_inter_node=True,
        rabbitmq_nodename="rabbit@node-1.internal",
    )
    directory = tmp_path_factory.mktemp(host_name(GOOD))
    cases[GOOD] = broker(**_files(directory, "good", host_name(GOOD)))
    directory = tmp_path_factory.mktemp(host_name(KEY_CONTENT))
    tls = _files(directory, "key does not match", host_name(KEY_CONTENT))
    changes = {"rabbitmq_tls_private_key_src": None, "rabbitmq_tls_private_key": (directory / "key.pem").read_text()}
    cases[KEY_CONTENT] = broker(**(tls | changes))
    results = run_cases(tmp_path_factory.mktemp("run"), "rabbitmq", cases)
    return {case: (results[case], Path(cases[case]["rabbitmq_tls_certificate_src"]).parent) for case in cases}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_certificates_fail_before_any_change(results: dict[str, tuple[HostResult, Path]], case: str) -> None:
    host, directory = results[case]
    errors = host.errors()
    file, problem = BAD[case]
    problem = problem.format(host=host.host)
    assert host.recap.get("failures", 0) >= 1, host.describe()
    assert str(directory / file) in errors, f"the message does not name {file}:\n{host.describe()}"
    assert problem in errors, f"{problem!r} not in the errors:\n{host.describe()}"
    assert host.recap["changed"] == 0 and host.recap["unreachable"] == 0, host.describe()
    assert "BEGIN PRIVATE KEY" not in host.output, "a key leaked into the output"


def test_inter_node_tls_needs_the_node_host_in_the_certificate(results: dict[str, tuple[HostResult, Path]]) -> None:
    """The other nodes and the CLI tools verify the node's host name: a certificate valid for the
    names clients use but not for the node's host is refused for inter-node TLS."""
    host, directory = results[INTER_NODE]
    errors = host.errors()
    assert host.recap.get("failures", 0) >= 1, host.describe()
    assert f"{directory / 'cert.pem'}" in errors and "does not cover node-1.internal" in errors, host.describe()
    assert host.recap["changed"] == 0 and host.recap["unreachable"] == 0, host.describe()


def test_good_certificates_pass_the_prechecks(results: dict[str, tuple[HostResult, Path]]) -> None:
    """The control: the same files, right, get past every TLS check to the first task on the host."""
    host, _directory = results[GOOD]
    assert host.recap.get("unreachable") == 1, host.describe()
    assert host.recap["failures"] == 0, host.describe()
    assert "rabbitmq : Check that the certificate stays valid long enough" in host.ok, host.describe()


def test_key_content_never_shown(results: dict[str, tuple[HostResult, Path]]) -> None:
    host, directory = results[KEY_CONTENT]
    assert "does not match its key" in host.errors(), host.describe()
    key = (directory / "key.pem").read_text()
    body = "".join(key.strip().splitlines()[1:-1])
    assert body[:40] not in host.output.replace("\n", "").replace(" ", ""), "the key leaked into the output"
