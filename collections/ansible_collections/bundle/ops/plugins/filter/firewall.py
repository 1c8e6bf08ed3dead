"""`firewall_address`: the IP address at the start of a text (SSH_CLIENT's "ADDRESS PORT PORT", or one line of
`ip route get`'s "src"), normalised; '' when it is none (sshd writes UNKNOWN when it cannot tell)."""

from __future__ import annotations

import ipaddress
from typing import Any


def firewall_address(text: Any) -> str:
    words = str(text or "").split()
    if not words:
        return ""
    try:
        return str(ipaddress.ip_address(words[0]))
    except ValueError:
        return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"firewall_address": firewall_address}
