"""Entry point: `account-worker` (runit: chpst -u user -e /etc/NAME/env account-worker)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

from account_worker import __version__
from account_worker.actions import load_action
from account_worker.config import load_config
from account_worker.db import Database, HostCache
from account_worker.errors import ConfigError
from account_worker.logsetup import log_event, setup_logging
from account_worker.runner import Runner

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        cfg = load_config(os.environ if environ is None else environ)
        action = load_action(cfg.action)
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
    try:
        return Runner(cfg, database, action, stop, logger=logger).run()
    except Exception:  # noqa: BLE001 - last resort: log one line, let runit restart us
        log_event(logger, logging.CRITICAL, "worker_crashed", exc_info=True)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
