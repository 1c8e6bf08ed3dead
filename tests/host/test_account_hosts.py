"""Host checks of an account host (role account_host): sshd up, the workers' user and its restricted keys."""

from __future__ import annotations

import re

USER = "account-jobs"
HOME = "/var/lib/account-jobs"


def test_sshd_listens_on_22(host) -> None:
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening or host.socket("tcp://:::22").is_listening


def test_the_workers_user_is_unprivileged(host) -> None:
    user = host.user(USER)
    assert user.exists and user.uid != 0 and user.home == HOME
    assert "sudo" not in user.groups and "root" not in user.groups
    assert host.file(f"{HOME}/.ssh").mode == 0o700


def test_every_worker_key_is_restricted_to_the_workers_addresses(host) -> None:
    keys = host.file(f"{HOME}/.ssh/authorized_keys")
    assert keys.user == USER and keys.mode == 0o600
    lines = [line for line in keys.content_string.splitlines() if line and not line.startswith("#")]
    assert lines, "no worker key deployed"
    for line in lines:
        match = re.fullmatch(r'restrict,from="([0-9a-fA-F.:/,]+)" ssh-ed25519 \S+( .*)?', line)
        assert match, f"unrestricted key line: {line[:60]}"
        assert "0.0.0.0/0" not in match[1].split(",")
