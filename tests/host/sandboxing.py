"""What the host checks read of a service's systemd sandbox (roles/systemd_sandbox)."""

from __future__ import annotations

import re

SCORE_LIMIT = 5.0


def assert_sandboxed(host, unit: str) -> dict[str, str]:
    """The unit is active with the shared directives in force (read back from systemd, not from the drop-in
    file) and systemd-analyze's exposure score is below SCORE_LIMIT; returns the properties read, for the
    unit's own directives."""
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {unit} -p ActiveState -p ProtectSystem -p ProtectHome -p PrivateTmp -p PrivateDevices "
            "-p NoNewPrivileges -p CapabilityBoundingSet"
        ).splitlines()
    )
    assert props["ActiveState"] == "active", props
    shared = {k: props[k] for k in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges")}
    assert shared == {
        "ProtectSystem": "full",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
    }, props
    last = host.check_output(f"systemd-analyze security {unit} 2>&1 | tail -1")
    score = re.search(rf"exposure level for {re.escape(unit)}\.service: (\d+\.\d)", last)
    assert score, f"no exposure score in: {last}"
    assert float(score.group(1)) < SCORE_LIMIT, f"{unit}: exposure score {score.group(1)}"
    return props
