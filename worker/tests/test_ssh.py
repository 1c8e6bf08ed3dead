"""The ssh action's pure parts: outcome mapping, output bounds, and the per-host connection pool (fake clients)."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from concurrent.futures import Future
from typing import ClassVar

import paramiko
import pytest

from account_worker.actions import Outcome
from account_worker.commands import parse_allow_list
from account_worker.decisions import DeadLetter, Retry, decide
from account_worker.errors import InvalidMessage, PermanentJobError, TransientJobError
from account_worker.messages import Job
from account_worker.ssh import SshAction, classify, exit_outcome
from account_worker.ssh_pool import (
    SSHD_MAX_SESSIONS,
    RunTimeout,
    SshPool,
    UnpinnedHostKey,
    _Bounded,
    bounded_text,
    close_stdin,
    host_and_port,
    spare_sessions,
)
from fakes import ssh_settings

COMMANDS = parse_allow_list(json.dumps({"check": {"argv": ["check"], "retry_exit_codes": [75]}}))
CHECK = COMMANDS["check"]
SETTINGS = ssh_settings(user="jobs", key_file="/k", known_hosts="/kh", idle_timeout=60, host_concurrency=2)


def _decision(error: Exception):
    return decide(error, attempt=1, max_attempts=3, retry_delay_ms=100)


def test_exit_zero_is_done_with_its_output():
    assert exit_outcome(CHECK, "h", 0, "ok\n", "") == Outcome("done", 0, "ok\n", "")


def test_a_listed_exit_code_is_retried_and_any_other_dead_lettered_with_the_status():
    with pytest.raises(TransientJobError) as retry:
        exit_outcome(CHECK, "h", 75, "", "busy")
    assert isinstance(_decision(retry.value), Retry)
    with pytest.raises(PermanentJobError) as dead:
        exit_outcome(CHECK, "h", 3, "", "disk   full\n")
    decision = _decision(dead.value)
    assert isinstance(decision, DeadLetter)
    assert "exited with status 3: disk full" in decision.reason


def test_a_command_killed_without_status_is_retried():
    with pytest.raises(TransientJobError):
        exit_outcome(CHECK, "h", -1, "", "")


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (
            paramiko.BadHostKeyException("h", paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)),
            DeadLetter,
            "host key mismatch",
        ),
        (UnpinnedHostKey("host key of h is not in the pinned known_hosts"), DeadLetter, "not in the pinned"),
        (paramiko.AuthenticationException("nope"), DeadLetter, "authentication as jobs"),
        (ConnectionRefusedError(111, "Connection refused"), Retry, "cannot connect to h"),
        (paramiko.ssh_exception.NoValidConnectionsError({("10.0.0.1", 22): OSError("x")}), Retry, "cannot connect"),
        (TimeoutError("timed out"), Retry, "timed out"),
        (socket.gaierror(-2, "Name or service not known"), Retry, "cannot be resolved"),
        (RunTimeout("still running after 5 s"), Retry, "timed out"),
        (paramiko.SSHException("Error reading SSH protocol banner"), Retry, "ssh session"),
        (EOFError(), Retry, "ssh session"),
    ],
)
def test_connection_failures_map_onto_the_existing_rules(error, kind, words):
    decision = _decision(classify(error, "h", "jobs"))
    assert isinstance(decision, kind)
    assert words in decision.reason


def test_output_is_bounded_and_says_so():
    kept = _Bounded(4)
    kept.add(b"abc")
    kept.add(b"def\x00")
    assert kept.text() == "abcd\n[truncated: 7 bytes, 4 kept]"
    assert bounded_text(b"a\x00\xffb", 4) == "a\ufffd\ufffdb"


# ---------------------------------------------------------------------------- the pool, with fake clients


class FakeChannel:
    def __init__(self, transport):
        self.transport = transport
        self.active = True

    def get_transport(self):
        return self.transport

    def exec_command(self, line):
        self.line = line
        self.transport.commands.append(line)

    def shutdown_write(self):
        pass

    def recv_ready(self):
        return False

    def recv_stderr_ready(self):
        return False

    def exit_status_ready(self):
        return True

    eof_received = True
    closed = False

    def recv_exit_status(self):
        return 0

    def close(self):
        self.closed = True


class FakeTransport:
    def __init__(self):
        self.active = True
        self.commands = []
        self.broken_sessions = 0
        self.sock = None  # paramiko's is the connection's socket

    def is_active(self):
        return self.active

    def set_keepalive(self, seconds):
        pass

    refused_sessions = 0
    opened = 0

    def open_session(self, timeout=None):
        self.opened += 1
        if self.refused_sessions:
            self.refused_sessions -= 1
            raise paramiko.ChannelException(2, "Connect failed")
        if self.broken_sessions:
            self.broken_sessions -= 1
            raise paramiko.SSHException("transport dead")
        return FakeChannel(self)


class FakeClient:
    made: ClassVar[list[FakeClient]] = []

    def __init__(self):
        self.transport = FakeTransport()
        self.closed = False
        FakeClient.made.append(self)

    def load_host_keys(self, path):
        self.known_hosts = path

    def set_missing_host_key_policy(self, policy):
        self.policy = policy

    def connect(self, host, **kwargs):
        self.host, self.kwargs = host, kwargs

    def get_transport(self):
        return self.transport

    def close(self):
        self.closed = True
        self.transport.active = False


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Inline:
    """Opens the spare channels at once, in the job's thread: the tests see each step in order."""

    def submit(self, fn, *args, **kwargs):
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to the pool as a real executor would
            future.set_exception(exc)
        return future


@pytest.fixture
def pool():
    """A pool that opens each job's channel when the job starts (no spares)."""
    FakeClient.made = []
    clock = Clock()
    p = SshPool(SETTINGS, client_factory=FakeClient, clock=clock, spares=0)
    p.clock = clock
    return p


@pytest.fixture
def spared():
    """A pool with two channels opened ahead per host, opened in order."""
    FakeClient.made = []
    clock = Clock()
    p = SshPool(SETTINGS, client_factory=FakeClient, clock=clock, spares=2, opener=Inline(), spare_after=0)
    p.clock = clock
    return p


def test_one_connection_per_host_shared_by_its_jobs(pool):
    for _ in range(5):
        assert pool.run("a", "uptime") == (0, "", "")
    pool.run("b", "uptime")
    assert pool.handshakes == 2
    first = FakeClient.made[0]
    assert first.transport.commands == ["uptime"] * 5
    assert first.kwargs["username"] == "jobs" and first.kwargs["key_filename"] == "/k"
    assert first.kwargs["look_for_keys"] is False and first.kwargs["allow_agent"] is False
    assert first.known_hosts == "/kh"
    assert isinstance(first.policy, paramiko.MissingHostKeyPolicy)
    assert not isinstance(first.policy, paramiko.AutoAddPolicy)


def test_each_connection_sends_its_packets_without_waiting_for_acks():
    """TCP_NODELAY: a job's small packets (channel open, exec, EOF) leave at once, not after the host's
    delayed ACK of the one before (up to 40 ms each on Linux)."""

    class TcpClient(FakeClient):
        def connect(self, host, **kwargs):
            super().connect(host, **kwargs)
            self.transport.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    pool = SshPool(SETTINGS, client_factory=TcpClient, clock=Clock())
    pool.run("a", "uptime")
    with FakeClient.made[-1].transport.sock as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_the_policy_rejects_unknown_host_keys(pool):
    pool.run("a", "uptime")
    with pytest.raises(UnpinnedHostKey):
        FakeClient.made[0].policy.missing_host_key(None, "a", None)


def test_idle_connections_are_closed_and_reopened_when_needed(pool):
    pool.run("a", "uptime")
    pool.clock.now = 61
    pool.close_idle()
    assert FakeClient.made[0].closed
    pool.run("a", "uptime")
    assert pool.handshakes == 2


def test_the_action_closes_its_idle_connections_when_asked(pool):
    action = SshAction(SETTINGS, COMMANDS, pool)
    pool.run("a", "uptime")
    action.close_idle()
    assert not FakeClient.made[0].closed  # used within the idle timeout
    pool.clock.now = 61
    action.close_idle()
    assert FakeClient.made[0].closed


def test_a_broken_transport_is_replaced_once_before_anything_ran(pool):
    pool.run("a", "uptime")
    FakeClient.made[0].transport.broken_sessions = 1
    assert pool.run("a", "uptime")[0] == 0
    assert pool.handshakes == 2
    assert FakeClient.made[0].closed and FakeClient.made[1].transport.commands == ["uptime"]


def test_a_refused_channel_keeps_the_shared_connection_and_is_retried_later(pool):
    pool.run("a", "uptime")
    FakeClient.made[0].transport.refused_sessions = 1
    with pytest.raises(paramiko.ChannelException) as refused:
        pool.run("a", "uptime")
    assert isinstance(classify(refused.value, "a", "jobs"), TransientJobError)
    assert pool.handshakes == 1 and not FakeClient.made[0].closed
    assert pool.run("a", "uptime")[0] == 0
    assert pool.handshakes == 1


def test_a_failed_transport_another_job_replaced_already_is_not_replaced_again(pool):
    pool.run("a", "uptime")
    first = FakeClient.made[0].transport
    first.active = False
    pool.run("a", "uptime")  # this job finds it dead and connects anew
    with pool._lease("a", replace=first) as transport:  # a job that saw `first` fail meanwhile
        assert transport is FakeClient.made[1].transport
    assert pool.handshakes == 2 and not FakeClient.made[1].closed


def test_a_dead_transport_is_reconnected(pool):
    pool.run("a", "uptime")
    FakeClient.made[0].transport.active = False
    pool.run("a", "uptime")
    assert pool.handshakes == 2


def test_concurrent_jobs_to_a_new_host_make_one_connection(pool):
    threads = [threading.Thread(target=pool.run, args=("a", "uptime")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.handshakes == 1
    assert len(FakeClient.made[0].transport.commands) == 8


def test_each_job_starts_on_a_channel_opened_while_the_one_before_ran(spared):
    """Across a network, opening the channel is a round trip the job no longer waits for."""
    for _ in range(3):
        assert spared.run("a", "uptime") == (0, "", "")
    transport = FakeClient.made[0].transport
    assert transport.commands == ["uptime"] * 3
    assert spared.spares_used == 2  # the first job opened its own
    assert transport.opened == 4  # the first job's, then one ahead for each job


def test_no_channel_is_opened_ahead_for_a_host_next_door():
    """Where a channel opens at once (loopback, a LAN) a spare would save nothing and cost a thread hand-off."""
    FakeClient.made = []
    pool = SshPool(SETTINGS, client_factory=FakeClient, clock=Clock(), spares=2, opener=Inline(), spare_after=1.0)
    for _ in range(3):
        pool.run("a", "uptime")
    assert pool.spares_used == 0 and FakeClient.made[0].transport.opened == 3


def test_the_spares_stay_within_sshd_s_max_sessions():
    """At most one spare per job slot, and a channel for every job slot beside them within MaxSessions."""
    assert [spare_sessions(c) for c in (1, 4, 5, 6, 8, 10)] == [1, 4, 5, 4, 2, 0]
    for concurrency in range(1, SSHD_MAX_SESSIONS + 1):
        assert concurrency + spare_sessions(concurrency) <= SSHD_MAX_SESSIONS


def test_fewer_spares_while_sshd_may_still_count_the_channels_jobs_closed():
    """sshd counts a job's channel until our close reaches it: the spares opened leave room for a
    channel per job slot and for each channel closed within the last round trip (here the clock
    stands still, so every close is that recent)."""
    FakeClient.made = []
    clock = Clock()
    settings = dataclasses.replace(SETTINGS, host_concurrency=4)
    pool = SshPool(settings, client_factory=FakeClient, clock=clock, spares=4, opener=Inline(), spare_after=0)
    entry = pool._host("a")
    spares = []
    for _ in range(8):
        pool.run("a", "uptime")
        spares.append(len(entry.spares))
    # room = 10 - 4 job slots - closed: 6, 5, 4, 3, 2, 1, 0, -1 before each job's own close
    assert spares == [1, 1, 1, 1, 1, 1, 0, 0]
    assert pool.spares_used == 6 and FakeClient.made[0].transport.opened == 1 + 6 + 1
    clock.now += 1.0  # the closes are a round trip old now: sshd has them, the spares come back
    pool.run("a", "uptime")
    assert len(entry.spares) == 1 and list(entry.closed) == [1.0]


def test_the_record_of_closed_channels_stays_one_round_trip_long():
    """A host next door never gets spares, yet its jobs' closes are forgotten as they age (no growth per job)."""
    FakeClient.made = []
    clock = Clock()
    pool = SshPool(SETTINGS, client_factory=FakeClient, clock=clock, spares=2, opener=Inline(), spare_after=1.0)
    for _ in range(100):
        pool.run("a", "uptime")
        clock.now += 1.0
    assert len(pool._host("a").closed) <= 1 and pool.spares_used == 0


def test_a_spare_closed_meanwhile_or_of_a_replaced_transport_is_not_used(spared):
    spared.run("a", "uptime")
    spare = spared._hosts["a"].spares[0].result()
    spare.closed = True  # e.g. sshd's ChannelTimeout
    assert spared.run("a", "uptime")[0] == 0
    assert spared.spares_used == 0
    FakeClient.made[0].transport.active = False
    assert spared.run("a", "uptime")[0] == 0
    assert spared.handshakes == 2 and spared.spares_used == 0
    assert FakeClient.made[1].transport.commands == ["uptime"]


def test_a_host_that_refuses_a_channel_gets_no_spares_again(spared):
    """A host whose MaxSessions is below the default: the refused spare is not a failed job."""
    spared.run("a", "uptime")
    transport = FakeClient.made[0].transport
    transport.refused_sessions = 1
    assert spared.run("a", "uptime")[0] == 0  # runs on the spare; the next spare's open is refused
    assert spared.run("a", "uptime")[0] == 0  # finds the refusal, opens its own channel
    opened = transport.opened
    assert spared.run("a", "uptime")[0] == 0
    assert transport.opened == opened + 1 and spared.spares_used == 1
    assert transport.commands == ["uptime"] * 4 and spared.handshakes == 1


def test_concurrent_jobs_with_spares_opened_by_threads_make_one_connection():
    FakeClient.made = []
    pool = SshPool(SETTINGS, client_factory=FakeClient, clock=Clock(), spares=2, spare_after=0)
    threads = [threading.Thread(target=pool.run, args=("a", "uptime")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    assert pool.handshakes == 1
    assert len(FakeClient.made[0].transport.commands) == 8


def test_the_action_refuses_commands_outside_the_allow_list_before_connecting(pool):
    action = SshAction(SETTINGS, COMMANDS, pool)
    with pytest.raises(InvalidMessage):
        action(Job("m", "k", "u", payload={"command": "rm"}), "a")
    with pytest.raises(InvalidMessage, match="no command"):
        action(Job("m", "k", "u", payload={"comand": "check"}), "a")
    assert pool.handshakes == 0
    assert action(Job("m", "k", "u"), "a") == "done"  # no payload: the record-only job
    assert pool.handshakes == 0
    assert action(Job("m", "k", "u", payload={"command": "check"}), "a") == Outcome("done", 0, "", "")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acct-1.example.net", ("acct-1.example.net", 22)),
        ("acct-1.example.net:2222", ("acct-1.example.net", 2222)),
        ("127.0.0.1:2222", ("127.0.0.1", 2222)),
        ("[2001:db8::7]:2200", ("2001:db8::7", 2200)),
        ("[2001:db8::7]", ("2001:db8::7", 22)),
        ("2001:db8::7", ("2001:db8::7", 22)),
    ],
)
def test_an_account_host_may_name_its_port(host, expected):
    assert host_and_port(host, 22) == expected


@pytest.mark.parametrize(
    "host", ["a:0", "a:65536", "a:ssh", ":22", "[2001:db8::7", "[2001:db8::7]x", "[::1]:", "[]:22"]
)
def test_a_malformed_host_port_is_dead_lettered_before_connecting(pool, host):
    with pytest.raises(PermanentJobError, match="account host"):
        SshAction(SETTINGS, COMMANDS, pool)(Job("m", "k", "1", payload={"command": "check"}), host)
    assert pool.handshakes == 0


def test_the_host_s_port_is_used_and_keys_the_connection(pool):
    pool.run("acct:2222", "uptime")
    pool.run("acct", "uptime")
    first, second = FakeClient.made
    assert (first.host, first.kwargs["port"]) == ("acct", 2222)
    assert (second.host, second.kwargs["port"]) == ("acct", SETTINGS.port)
    assert pool.handshakes == 2


class RecordingTransport:
    """What a real paramiko Channel needs of its transport to send EOF and close: messages in wire order."""

    def __init__(self):
        self.sent: list[str] = []
        self.sending = threading.Event()

    def get_log_channel(self):
        return "paramiko.test"

    def _send_user_message(self, message):
        kind = {paramiko.common.cMSG_CHANNEL_EOF: "EOF", paramiko.common.cMSG_CHANNEL_CLOSE: "CLOSE"}
        sent = kind[message.asbytes()[:1]]
        if sent == "EOF":  # the job's thread, slow to the socket: the transport thread gets its chance
            self.sending.set()
            threading.Event().wait(0.05)
        self.sent.append(sent)


def _open_channel(transport):
    channel = paramiko.Channel(7)
    channel._set_transport(transport)
    channel.remote_chanid = 9
    channel.active = True
    return channel


def test_the_eof_leaves_before_the_close_that_sshd_s_own_close_triggers():
    """sshd closes the channel of a command that ended at once; paramiko answers with our close from its
    transport thread.  Our EOF must be on the wire before that close: after it, sshd drops the connection."""
    transport = RecordingTransport()
    channel = _open_channel(transport)

    def sshd_closes():  # the transport thread handling sshd's CHANNEL_CLOSE while our EOF is being sent
        transport.sending.wait(5)
        with channel.lock:
            messages = channel._close_internal()
        for message in messages:
            if message is not None:
                transport._send_user_message(message)

    closer = threading.Thread(target=sshd_closes)
    closer.start()
    close_stdin(channel)
    closer.join(5)
    assert transport.sent == ["EOF", "CLOSE"]


def test_no_eof_on_a_channel_closed_already():
    transport = RecordingTransport()
    channel = _open_channel(transport)
    with channel.lock:
        for message in channel._close_internal():  # the close carries its EOF
            transport._send_user_message(message)
    close_stdin(channel)
    assert transport.sent == ["EOF", "CLOSE"]
