"""Prints the serial number (hex) of the certificate a TLS server presents, after
verifying it against a CA file, with an optional client certificate (mutual TLS).

Usage: served_serial.py HOST PORT CA_FILE [CLIENT_CERT CLIENT_KEY]
"""

from __future__ import annotations

import socket
import ssl
import sys


def _tlv(der: bytes, at: int) -> tuple[int, int]:
    """Start of the content and end of the DER element at `at`."""
    length, start = der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start : start + count], "big"), start + count
    return start, start + length


def serial(der: bytes) -> int:
    """tbsCertificate's serialNumber: its first element, or its second after the version."""
    tbs, _ = _tlv(der, 0)
    at, _ = _tlv(der, tbs)
    if der[at] == 0xA0:
        at = _tlv(der, at)[1]
    start, end = _tlv(der, at)
    return int.from_bytes(der[start:end], "big")


def main(host: str, port: str, ca_file: str, *client: str) -> int:
    context = ssl.create_default_context(cafile=ca_file)
    if client:
        context.load_cert_chain(*client)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        print("no certificate presented", file=sys.stderr)
        return 1
    print(f"{serial(der):x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
