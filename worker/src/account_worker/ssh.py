"""The ssh action (WORKER_ACTION=ssh): run an allow-listed command on the account's host.

The command is resolved against the allow-list (commands.py) and run over the host's
shared connection (ssh_pool.py: pinned host keys, one transport per host, bounded time
and output); here its end becomes the job's outcome.

Outcomes (see decisions.decide): exit 0 -> done, recorded with its output; an exit code
the command lists in retry_exit_codes, a refused or timed-out connection, an
unreachable host, a run past its time limit -> TransientJobError (retried, then
dead-lettered); any other exit code, a host key that differs from or is missing in
known_hosts, a refused login -> PermanentJobError (dead-lettered with the reason); a
command that is not allow-listed or a parameter failing its pattern -> InvalidMessage.
A job without a payload is the record-only job (actions.default_action): nothing runs.
"""

from __future__ import annotations

import socket

import paramiko

from account_worker.actions import Outcome, default_action
from account_worker.commands import AllowList, Command, request_of
from account_worker.errors import PermanentJobError, TransientJobError
from account_worker.messages import Job
from account_worker.ssh_pool import RunTimeout, SshPool, SshSettings, UnpinnedHostKey, host_and_port

STDERR_IN_REASON = 200  # characters of stderr a dead-letter reason quotes


class SshAction:
    """The action: resolve the job's command against the allow-list, run it on the host."""

    def __init__(self, settings: SshSettings, allow_list: AllowList, pool: SshPool | None = None) -> None:
        self._settings = settings
        self._allow_list = allow_list
        self.pool = pool or SshPool(settings)

    def __call__(self, job: Job, host: str) -> str | Outcome:
        if not job.payload:  # no payload at all: the record-only job (a payload without a command is invalid)
            return default_action(job, host)
        request = request_of(self._allow_list, job.payload)  # InvalidMessage: dead-lettered as invalid
        host_and_port(host, self._settings.port)  # a malformed host: PermanentJobError, before connecting
        try:
            exit_status, stdout, stderr = self.pool.run(host, request.line)
        except Exception as exc:  # classified into retry or dead-letter
            raise classify(exc, host, self._settings.user) from exc
        return exit_outcome(request.command, host, exit_status, stdout, stderr)

    def close_idle(self) -> None:
        """Close the connections no job used for WORKER_SSH_IDLE_TIMEOUT (the job thread calls it when idle)."""
        self.pool.close_idle()

    def close(self) -> None:
        self.pool.close()


def exit_outcome(command: Command, host: str, exit_status: int, stdout: str, stderr: str) -> Outcome:
    """Outcome of a command that ran: done on 0; else TransientJobError or PermanentJobError."""
    if exit_status == 0:
        return Outcome("done", 0, stdout, stderr)
    tail = " ".join(stderr.split())[-STDERR_IN_REASON:]
    if exit_status < 0:
        raise TransientJobError(f"command {command.name} on {host} ended without an exit status")
    detail = f"command {command.name} on {host} exited with status {exit_status}" + (f": {tail}" if tail else "")
    if exit_status in command.retry_exit_codes:
        raise TransientJobError(detail)
    raise PermanentJobError(detail)


def classify(error: BaseException, host: str, user: str) -> Exception:
    """The job error for a failure to connect or run: permanent for keys and logins, else transient."""
    if isinstance(error, paramiko.BadHostKeyException):
        return PermanentJobError(f"host key mismatch for {host}: it differs from the pinned known_hosts")
    if isinstance(error, UnpinnedHostKey):
        return PermanentJobError(str(error))
    if isinstance(error, paramiko.AuthenticationException):
        return PermanentJobError(f"authentication as {user} on {host} failed")
    if isinstance(error, RunTimeout):
        return TransientJobError(f"command on {host} timed out: {error}")
    if isinstance(error, TimeoutError | socket.timeout):
        return TransientJobError(f"connection to {host} timed out")
    if isinstance(error, socket.gaierror):
        return TransientJobError(f"host {host} cannot be resolved: {error.strerror}")
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError | ConnectionError | OSError):
        return TransientJobError(f"cannot connect to {host}: {error}")
    if isinstance(error, paramiko.SSHException | EOFError):
        return TransientJobError(f"ssh session with {host} failed: {type(error).__name__}: {error}")
    return TransientJobError(f"ssh to {host} failed: {type(error).__name__}: {error}")
