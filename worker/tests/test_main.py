from __future__ import annotations

import pytest

from account_worker.main import EXIT_CONFIG, EXIT_OK, main


def test_config_error_exit_78(capsys):
    assert main([], environ={}) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("account-worker: config error: WORKER_AMQP_URLS")
    assert err.count("\n") == 1


def test_bad_action_exit_78(env, capsys):
    env["WORKER_ACTION"] = "no.such.module:run"
    assert main([], environ=env) == EXIT_CONFIG
    assert "config error: WORKER_ACTION" in capsys.readouterr().err


def test_check_config_ok_hides_secrets(env, capsys):
    assert main(["--check-config"], environ=env) == EXIT_OK
    err = capsys.readouterr().err
    assert "config ok" in err and "s3cret" not in err and "dbpass" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "1.0.0" in capsys.readouterr().out
