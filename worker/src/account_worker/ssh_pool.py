"""The ssh action's connections: one SSH transport per host, shared by that host's jobs.

paramiko does the protocol.  The host key is checked against the pinned known_hosts
file only (an unknown key is rejected, never added); the worker logs in as one
configured user with its own key, on the port the account's host names (`name:port`,
`[address]:port`) or else the configured one.  A host's transport is shared by its
jobs (one channel per job, at most `host_concurrency` at a time), closed once idle, and
re-established when it broke.  Connect and run times and the output kept are bounded.

Opening a channel costs a round trip before the command can be sent: each job starts on a
channel opened ahead ("spare") while an earlier job ran, and opens the next one, so across
a network a job waits one round trip instead of two.  The spares stay within OpenSSH's
default MaxSessions beside the running and the closing channels (`spare_sessions`,
`SshPool._open_spare`); a host that refuses a channel gets none again.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paramiko

from account_worker.config import Config
from account_worker.errors import PermanentJobError
from account_worker.logsetup import LOGGER_NAME, log_event

READ_CHUNK = 32768
POLL_SECONDS = 0.2  # longest wait between two looks at a running command's channel
SSHD_MAX_SESSIONS = 10  # OpenSSH's default MaxSessions: channels open at once on one connection
# Channels are opened ahead only for a host whose last channel took this long to open: across a network
# that is a round trip saved per job; next door (a LAN, loopback) it would only cost a thread hand-off.
SPARE_AFTER_SECONDS = 0.005


def spare_sessions(host_concurrency: int) -> int:
    """The most channels kept open ahead per host: one per job slot, within what MaxSessions leaves beside
    a channel for each job slot (4 with the default 4).  Fewer while sshd may still count channels the
    jobs closed (SshPool._open_spare)."""
    return max(0, min(host_concurrency, SSHD_MAX_SESSIONS - host_concurrency))


@dataclass(frozen=True)
class SshSettings:
    """The ssh action's settings, taken from Config (which holds their defaults: WORKER_SSH_*)."""

    user: str
    key_file: str
    known_hosts: str
    port: int
    connect_timeout: float
    run_timeout: float
    max_output: int
    idle_timeout: float
    host_concurrency: int

    @classmethod
    def from_config(cls, cfg: Config) -> SshSettings:
        assert cfg.ssh_key_file and cfg.ssh_known_hosts  # load_config requires them with the ssh action
        return cls(
            user=cfg.ssh_user,
            key_file=cfg.ssh_key_file,
            known_hosts=cfg.ssh_known_hosts,
            port=cfg.ssh_port,
            connect_timeout=cfg.ssh_connect_timeout,
            run_timeout=cfg.ssh_run_timeout,
            max_output=cfg.ssh_max_output,
            idle_timeout=cfg.ssh_idle_timeout,
            host_concurrency=cfg.ssh_host_concurrency,
        )


class UnpinnedHostKey(paramiko.SSHException):  # type: ignore[misc]
    """The host offered a key that known_hosts does not list for it."""


class _RejectUnpinned(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Like paramiko's RejectPolicy, with an exception of its own so the reason is exact."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise UnpinnedHostKey(f"host key of {hostname} is not in the pinned known_hosts")


class RunTimeout(Exception):
    """The command did not finish within run_timeout."""


def host_and_port(host: str, default_port: int) -> tuple[str, int]:
    """An account's host as (name, port): `name`, `name:port`, `[address]:port`, `[address]`, or a
    bare IPv6 address (which takes the default port).  A port that is not 1..65535 is a PermanentJobError.
    """
    name, port = host, ""
    if host.startswith("["):
        inner, bracket, rest = host[1:].partition("]")
        if not bracket or not inner or (rest and not rest.startswith(":")):
            raise PermanentJobError(f"account host {host!r} is not a host name, [address] or [address]:port")
        name, port = inner, rest[1:] if rest else ""
        if rest and not port:
            port = "-"  # "[address]:" names no port
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    if not port:
        return name, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not name:
        raise PermanentJobError(f"account host {host!r} has no valid port (1..65535)")
    return name, int(port)


@dataclass
class _Bounded:
    """Keeps the first `limit` bytes of a stream and counts the rest."""

    limit: int
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    def text(self) -> str:
        return bounded_text(bytes(self.kept), self.total)


def bounded_text(kept: bytes, total: int) -> str:
    """Output as text for job_runs: UTF-8 (invalid bytes and NUL replaced), with a truncation note."""
    text = kept.decode("utf-8", "replace").replace("\x00", "\ufffd")
    if total > len(kept):
        text += f"\n[truncated: {total} bytes, {len(kept)} kept]"
    return text


@dataclass
class _Host:
    slots: threading.BoundedSemaphore
    spare_limit: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None
    users: int = 0
    last_used: float = 0.0
    spares: list[Future[Any]] = field(default_factory=list)  # channels being opened or open, oldest first
    open_seconds: float = 0.0  # how long the last channel took to open
    closed: deque[float] = field(default_factory=deque)  # when jobs closed their channels (the pool's clock)


def _no_delay(transport: Any) -> None:
    """Send each SSH packet at once (TCP_NODELAY), as OpenSSH does for interactive sessions. A job is a
    handful of small packets each way (channel open, exec, EOF, close); with Nagle's algorithm a packet
    waited for the ACK of the one before it, which the account host delays by up to 40 ms: one job's
    round trip took 24 ms at the median and 42 ms at p99 on the sandbox, 9 and 13 ms without the wait."""
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_stdin(channel: Any) -> None:
    """Send the command's stdin its EOF, on the wire before our close of the channel.

    A command that ends at once (`true`) has sshd close the channel right behind the exec's
    reply, and paramiko's transport thread answers that close with ours straight away.
    Channel.shutdown_write() makes the EOF under the channel's lock but sends it after letting
    go: our close could leave first, and an EOF after our close is a protocol error for which
    sshd drops the whole connection ("ieof packet referred to nonexistent channel"), failing
    every job on it (2 to 9 times per 2,000 jobs in bench/ssh_throughput.py).  So the EOF is
    made and sent under the lock paramiko's close of the channel takes too; a channel closed
    already sent its EOF with its close.  (paramiko's own methods; shutdown_write() if they are
    not there.)
    """
    lock = getattr(channel, "lock", None)
    make_eof = getattr(channel, "_send_eof", None)
    send = getattr(channel.get_transport(), "_send_user_message", None)
    if lock is None or make_eof is None or send is None:
        channel.shutdown_write()
        return
    with lock:
        if channel.closed:
            return
        message = make_eof()
        if message is not None:
            send(message)


class SshPool:
    """One transport per host, shared by that host's jobs (a channel each); closed when idle."""

    def __init__(
        self,
        settings: SshSettings,
        *,
        client_factory: Callable[[], Any] = paramiko.SSHClient,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        spares: int | None = None,
        opener: Any = None,
        spare_after: float = SPARE_AFTER_SECONDS,
    ) -> None:
        """`spares`: channels opened ahead per host (default `spare_sessions(host_concurrency)`), for hosts
        whose last channel took `spare_after` seconds or more to open; `opener` opens them (anything with
        `submit(fn, *args, **kwargs) -> Future`; default a small thread pool)."""
        self._settings = settings
        self._client_factory = client_factory
        self._clock = clock
        self._log = logger or logging.getLogger(LOGGER_NAME)
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self._spares = spare_sessions(settings.host_concurrency) if spares is None else spares
        self._spare_after = spare_after
        self._opener = opener or ThreadPoolExecutor(
            max_workers=max(1, self._spares), thread_name_prefix="ssh-spare-channels"
        )
        self.handshakes = 0  # connections made (for logs and tests)
        self.spares_used = 0  # jobs that started on a channel opened ahead (for tests)

    def _host(self, host: str) -> _Host:
        with self._lock:
            entry = self._hosts.get(host)
            if entry is None:
                entry = self._hosts[host] = _Host(
                    threading.BoundedSemaphore(self._settings.host_concurrency), spare_limit=self._spares
                )
            return entry

    def _connect(self, host: str) -> Any:
        s = self._settings
        name, port = host_and_port(host, s.port)
        client = self._client_factory()
        client.load_host_keys(s.known_hosts)
        client.set_missing_host_key_policy(_RejectUnpinned())
        try:
            client.connect(  # known_hosts is looked up as `name`, or as `[name]:port` off port 22
                name,
                port=port,
                username=s.user,
                key_filename=s.key_file,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            _no_delay(transport)
            transport.set_keepalive(30)
        with self._lock:
            self.handshakes += 1
        log_event(self._log, logging.INFO, "ssh_connected", host=host, user=s.user)
        return client

    @staticmethod
    def _active(client: Any) -> bool:
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    @contextlib.contextmanager
    def _lease(self, host: str, *, replace: Any = None) -> Iterator[Any]:
        """The host's transport, connecting if there is none or it is dead; counts as in use meanwhile.

        `replace` is a transport that just failed: it is replaced unless another job replaced it
        already (then the new one is used, not closed under the jobs it serves)."""
        entry = self._host(host)
        with entry.lock:
            current = entry.client.get_transport() if entry.client is not None else None
            if not self._active(entry.client) or (replace is not None and current is replace):
                old, entry.client = entry.client, None
                entry.spares.clear()  # channels of the old transport, closed with it
                if old is not None:
                    old.close()
                entry.client = self._connect(host)
            entry.users += 1
            transport = entry.client.get_transport()
        try:
            yield transport
        finally:
            with entry.lock:
                entry.users -= 1
                entry.last_used = self._clock()

    def _spare(self, entry: _Host, transport: Any) -> Any:
        """A channel opened ahead on this transport and still open, or None."""
        while True:
            with entry.lock:
                if not entry.spares:
                    return None
                future = entry.spares.pop(0)
            try:
                channel = future.result(timeout=self._settings.connect_timeout)
            except paramiko.ChannelException:
                self._no_more_spares(entry)
                continue
            except Exception:  # noqa: BLE001 - a spare that failed (or is slow) to open is only not used
                future.add_done_callback(_close_opened)
                continue
            if channel.get_transport() is transport and channel.active and not channel.closed:
                return channel
            channel.close()

    def _open(self, entry: _Host, transport: Any) -> Any:
        """A new channel on the transport; how long it took is remembered for the host."""
        started = self._clock()
        channel = transport.open_session(timeout=self._settings.connect_timeout)
        entry.open_seconds = self._clock() - started
        return channel

    def _open_spare(self, entry: _Host, transport: Any) -> None:
        """Open one more channel ahead if the host's sessions allow it.

        sshd counts a channel until our close reaches it, half a round trip after the job closed
        it.  So beside one channel per job slot it may count the channels closed within the last
        round trip (the last open's time, twice the half): only what MaxSessions leaves after both
        is opened ahead, at most the host's spare limit.
        """
        with entry.lock:
            now = self._clock()
            while entry.closed and now - entry.closed[0] > entry.open_seconds:
                entry.closed.popleft()  # here for every job, so the record stays one round trip long
            if entry.client is None or entry.open_seconds < self._spare_after:
                return
            room = SSHD_MAX_SESSIONS - self._settings.host_concurrency - len(entry.closed)
            if len(entry.spares) < min(entry.spare_limit, room):
                entry.spares.append(self._opener.submit(self._open, entry, transport))

    def _closed(self, entry: _Host) -> None:
        with entry.lock:
            entry.closed.append(self._clock())

    def _no_more_spares(self, entry: _Host) -> None:
        """The host refused a channel: it allows fewer sessions than assumed; its spares are closed."""
        with entry.lock:
            entry.spare_limit, spares, entry.spares = 0, entry.spares, []
        for future in spares:
            future.add_done_callback(_close_opened)

    def run(self, host: str, line: str) -> tuple[int, str, str]:
        """Run one command line on host: (exit status, stdout, stderr), output bounded."""
        self.close_idle()
        entry = self._host(host)
        with entry.slots:
            failed: Any = None
            for _ in range(2):
                with self._lease(host, replace=failed) as transport:
                    try:
                        channel = self._spare(entry, transport)
                        if channel is None:
                            channel = self._open(entry, transport)
                        else:
                            with self._lock:
                                self.spares_used += 1
                    except paramiko.ChannelException:
                        # sshd refused this channel (e.g. more than its MaxSessions) on a working
                        # connection: the connection stays for the other jobs; this one is retried.
                        self._no_more_spares(entry)
                        raise
                    except (paramiko.SSHException, EOFError, OSError):
                        if failed is not None:
                            raise
                        log_event(self._log, logging.WARNING, "ssh_reconnecting", host=host)
                        failed = transport  # a broken transport: nothing ran yet, connect anew once
                        continue
                    self._open_spare(entry, transport)  # for the next job, while this one runs
                    try:
                        return self._execute(channel, line)
                    finally:
                        self._closed(entry)
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, channel: Any, line: str) -> tuple[int, str, str]:
        s = self._settings
        out, err = _Bounded(s.max_output), _Bounded(s.max_output)
        deadline = self._clock() + s.run_timeout
        try:
            channel.exec_command(line)
            close_stdin(channel)
            while True:
                while channel.recv_ready():
                    out.add(channel.recv(READ_CHUNK))
                while channel.recv_stderr_ready():
                    err.add(channel.recv_stderr(READ_CHUNK))
                if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    if not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    continue
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise RunTimeout(f"still running after {s.run_timeout:g} s")
                if channel.eof_received:
                    channel.status_event.wait(min(remaining, POLL_SECONDS))
                else:
                    select.select([channel], [], [], min(remaining, POLL_SECONDS))
            return channel.recv_exit_status(), out.text(), err.text()
        finally:
            channel.close()

    def close_idle(self) -> None:
        """Close the transports no job used for idle_timeout seconds."""
        now = self._clock()
        with self._lock:
            entries = list(self._hosts.items())
        for host, entry in entries:
            with entry.lock:
                if entry.client is not None and not entry.users and now - entry.last_used > self._settings.idle_timeout:
                    entry.client.close()
                    entry.client = None
                    entry.spares.clear()
                    log_event(self._log, logging.INFO, "ssh_idle_closed", host=host)

    def close(self) -> None:
        if isinstance(self._opener, ThreadPoolExecutor):
            self._opener.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            entries = list(self._hosts.values())
        for entry in entries:
            with entry.lock:
                entry.spares.clear()
                if entry.client is not None:
                    entry.client.close()
                    entry.client = None


def _close_opened(future: Future[Any]) -> None:
    """Closes the channel a spare's open returned, if it returned one."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()
