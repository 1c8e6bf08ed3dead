from __future__ import annotations

import threading

import pytest

from account_worker.main import EXIT_CONFIG, EXIT_OK, exit_now, main


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


def test_exit_now_exits_at_once_past_a_thread_still_running_an_action():
    """A non-daemon thread still busy (an action past the grace) would hold Python's exit: exit_now exits hard."""
    release = threading.Event()
    busy = threading.Thread(target=release.wait, args=(10,), name="action_0")
    busy.start()
    exits: list[int] = []
    try:
        with pytest.raises(SystemExit):
            exit_now(3, threads=lambda: [busy], hard_exit=exits.append)
    finally:
        release.set()
        busy.join(5)
    assert exits == [3]


def test_exit_now_waits_for_threads_winding_down_and_exits_normally():
    done = threading.Thread(target=lambda: None, name="idle pool thread")
    done.start()
    exits: list[int] = []
    with pytest.raises(SystemExit) as raised:
        exit_now(0, threads=lambda: [done], hard_exit=exits.append)
    assert raised.value.code == 0 and exits == []
