"""Prints the serial number (hex) of the certificate a TLS server presents, after
verifying it against a CA file, with an optional client certificate (mutual TLS).

Usage: served_serial.py HOST PORT CA_FILE [CLIENT_CERT CLIENT_KEY]
"""

from __future__ import annotations

import socket
import ssl
import sys

from cryptography import x509


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
    print(f"{x509.load_der_x509_certificate(der).serial_number:x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
