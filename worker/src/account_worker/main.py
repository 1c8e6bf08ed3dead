"""Entry point: `account-worker` (runit: chpst -u user -e /etc/NAME/env account-worker)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from account_worker import __version__
from account_worker.actions import Action, load_action
from account_worker.config import SSH_ACTION, Config, load_config
from account_worker.db import Database, HostCache
from account_worker.errors import ConfigError
from account_worker.logsetup import LOGGER_NAME, log_event, setup_logging
from account_worker.observe import NO_OBSERVER
from account_worker.runner import Runner

if TYPE_CHECKING:
    from account_worker.metrics_server import Instrumentation

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h
# How long exit() lets threads that are only winding down (an idle pool's) end before it stops waiting.
THREADS_WIND_DOWN_SECONDS = 0.5


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="account-worker", description="Consume account jobs from RabbitMQ; configured by WORKER_* variables."
    )
    parser.add_argument("--version", action="version", version=f"account-worker {__version__}")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the environment and WORKER_ACTION, then exit"
    )
    return parser.parse_args(argv)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT only set the event; the runner does the graceful stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def build_action(cfg: Config) -> Action:
    """The configured action: the built-in ssh action (allow-list read now) or WORKER_ACTION's callable."""
    if cfg.action != SSH_ACTION:
        return load_action(cfg.action)
    from account_worker.commands import load_allow_list  # noqa: PLC0415 - paramiko only when used
    from account_worker.ssh import SshAction  # noqa: PLC0415
    from account_worker.ssh_pool import SshSettings  # noqa: PLC0415

    assert cfg.ssh_commands  # load_config requires it with the ssh action
    return SshAction(SshSettings.from_config(cfg), load_allow_list(cfg.ssh_commands))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        cfg = load_config(os.environ if environ is None else environ)
        action = build_action(cfg)
    except ConfigError as exc:
        print(f"account-worker: config error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if args.check_config:
        print(f"account-worker: config ok: {cfg!r}", file=sys.stderr, flush=True)
        return EXIT_OK

    logger = setup_logging(cfg.log_level, cfg.secrets())
    stop = threading.Event()
    install_signal_handlers(stop)
    database = Database(
        cfg.database_url, cache=HostCache(cfg.host_cache_ttl), secrets=cfg.secrets(), ca_file=cfg.database_ca_file
    )
    instrumentation: Instrumentation | None = None
    try:
        if cfg.metrics_port is not None:
            # The metrics server (and its client library, 20 ms of start-up) only when asked for.
            from account_worker.metrics_server import serve  # noqa: PLC0415

            # The probe's own connection: the job thread's belongs to the job thread.
            probe_db = Database(cfg.database_url, secrets=cfg.secrets(), ca_file=cfg.database_ca_file)
            instrumentation = serve(cfg, cfg.metrics_port, probe_db.ping, probe_db.close, logger)
        observer = instrumentation.metrics if instrumentation is not None else NO_OBSERVER
        return Runner(cfg, database, action, stop, logger=logger, observer=observer).run()
    except Exception:  # noqa: BLE001 - last resort: log one line, let runit restart us
        log_event(logger, logging.CRITICAL, "worker_crashed", exc_info=True)
        return EXIT_CRASH
    finally:
        if instrumentation is not None:
            instrumentation.close()
        close = getattr(action, "close", None)
        if callable(close):
            close()


def run() -> NoReturn:
    """The program (`account-worker`): main(), then exit with its code at once."""
    exit_now(main())


def exit_now(
    code: int,
    *,
    threads: Callable[[], list[threading.Thread]] = threading.enumerate,
    hard_exit: Callable[[int], object] = os._exit,
) -> NoReturn:
    """Exit with `code`, also while an action's thread still runs past the shutdown grace.

    The action pool's threads are not daemons, so Python would wait at exit for every
    action still running; the grace is over by then and its delivery unacked (it is
    redelivered).  Threads that are only winding down get THREADS_WIND_DOWN_SECONDS.
    """
    deadline = time.monotonic() + THREADS_WIND_DOWN_SECONDS
    for thread in _running(threads):
        thread.join(max(0.0, deadline - time.monotonic()))
    still = _running(threads)
    if still:
        log = logging.getLogger(LOGGER_NAME)
        log_event(
            log,
            logging.WARNING,
            "exit_with_actions_running",
            threads=len(still),
            note="their deliveries are unacked and will be redelivered",
        )
        for handler in (*log.handlers, *logging.getLogger().handlers):
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        hard_exit(code)
    sys.exit(code)


def _running(threads: Callable[[], list[threading.Thread]]) -> list[threading.Thread]:
    main_thread = threading.main_thread()
    return [t for t in threads() if t is not main_thread and not t.daemon and t.is_alive()]


if __name__ == "__main__":
    run()
