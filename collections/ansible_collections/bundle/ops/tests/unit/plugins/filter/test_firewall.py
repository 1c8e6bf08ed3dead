"""roles/firewall's pure part: which text is an address the filter may let in (the controller's, read from
SSH_CLIENT or from the controller's route to the host)."""

from __future__ import annotations

import pytest

from ansible_collections.bundle.ops.plugins.filter import firewall


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.89.0.1 51234 22", "10.89.0.1"),
        ("2001:db8::1 51234 22\n", "2001:db8::1"),
        ("10.89.0.1\n", "10.89.0.1"),
        ("UNKNOWN 0 0", ""),  # some sshd setups cannot tell
        ("", ""),
        (None, ""),
        ("10.89.0.1; nft flush ruleset", ""),  # never a rule's text
        ("999.1.1.1 1 2", ""),
    ],
)
def test_only_an_address_is_taken(text, address):
    assert firewall.firewall_address(text) == address
