from __future__ import annotations

import pytest

from account_worker.actions import default_action, load_action
from account_worker.errors import ActionLoadError, ConfigError, PermanentJobError
from account_worker.messages import Job


def test_default_action():
    job = Job("m", "k", "u")
    assert default_action(job, "host-1") == "done"
    with pytest.raises(PermanentJobError):
        default_action(job, " ")


def test_load_action():
    assert load_action("account_worker.actions:default_action") is default_action
    assert load_action("os.path:join") is not None


@pytest.mark.parametrize(
    "path", ["nope", "no.such.module:f", "account_worker.actions:missing", "account_worker.actions:__doc__", ":f"]
)
def test_load_action_errors(path):
    with pytest.raises(ActionLoadError) as info:
        load_action(path)
    assert isinstance(info.value, ConfigError)
    assert "WORKER_ACTION" in str(info.value)
