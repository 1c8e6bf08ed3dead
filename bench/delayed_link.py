"""A TCP relay on loopback that adds network latency: bytes arrive half a round trip after they were sent.

bench/ssh_throughput.py puts it in front of the account host's sshd to measure SSH jobs across a network
(real account hosts are not on the worker's two cores).  `tc netem` would delay the container's packets in
the kernel, but this machine's kernel is built without it (`CONFIG_NET_SCH_NETEM` is not set: `tc qdisc add
... netem` answers "Specified qdisc kind is unknown"), so the delay is added here: every chunk read from one
side is written to the other `rtt / 2` seconds after it was read, in order, in both directions.  Only
latency is modelled (no bandwidth limit, no loss); that is what a handshake's round trips pay.

    with DelayedLink(("127.0.0.1", 2222), rtt=0.020) as link:
        print(link.address)  # 127.0.0.1:<port>, connect here instead of 127.0.0.1:2222
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

CHUNK = 65536
# How long close() lets the relays end after their connections were aborted before it cancels them.
SHUTDOWN_SECONDS = 5.0


class DelayedLink:
    """Listens on an ephemeral loopback port; each connection is relayed to `target` with `rtt` added."""

    def __init__(self, target: tuple[str, int], rtt: float, listen: str = "127.0.0.1") -> None:
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0, got {rtt}")
        self.target = target
        self.rtt = rtt
        self.listen = listen
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delayed-link", daemon=True)
        self._server: asyncio.Server | None = None
        self._closing = False
        self._writers: set[asyncio.StreamWriter] = set()  # both ends of every open connection

    @property
    def address(self) -> str:
        return f"{self.listen}:{self.port}"

    def __enter__(self) -> DelayedLink:
        return self.start()

    def start(self) -> DelayedLink:
        """Start listening (on its own thread); `port` and `address` are known from here on."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, self.listen, 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop listening and end every connection, letting each relay finish rather than cancelling it.

        A relay task cancelled before its first step ends cancelled, which asyncio's stream server
        reports as an error ("Exception in callback"), and one started after a snapshot of the tasks
        would be left pending ("Task was destroyed but it is pending!"): a connection accepted while
        the link closes does both.  So the connections are aborted (each relay then sees the end of
        its streams and returns), again for any relay that started meanwhile, until no task is left;
        only what is still running after SHUTDOWN_SECONDS is cancelled.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_SECONDS
        current = asyncio.current_task()
        while tasks := {t for t in asyncio.all_tasks() if t is not current}:
            for writer in list(self._writers):
                writer.transport.abort()
            if loop.time() >= deadline:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return
            await asyncio.wait(tasks, timeout=0.1)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted while the link closes
            client_writer.transport.abort()
            return
        self.connections += 1
        self._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            self._writers.discard(client_writer)
            return
        self._writers.add(server_writer)
        try:
            await asyncio.sleep(self.rtt)  # the TCP handshake to a distant host costs one round trip
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except asyncio.CancelledError:
            pass  # cancelled by close() after SHUTDOWN_SECONDS; asyncio would log this task's end as an error
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy reader to writer, each chunk held until half a round trip after it was read; EOF likewise."""
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await in_flight.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        with contextlib.suppress(OSError):  # reset or gone: the other side is told by the close
            while data := await reader.read(CHUNK):
                in_flight.put_nowait((loop.time() + self.rtt / 2, data))
        in_flight.put_nowait((loop.time() + self.rtt / 2, b""))
        with contextlib.suppress(OSError):  # reset or gone: the other side is told by the close
            await sender
