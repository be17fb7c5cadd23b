"""A TCP proxy in front of the API server (TLS passes through untouched) that can go silent:
connections open at that moment stay open but deliver nothing more, the failure mode of a
watch behind a broken load balancer or NAT; new connections work normally."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from localkube.cluster import free_ports


class SilencingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        (self.port,) = free_ports(1)
        self._silenced: set[asyncio.StreamWriter] = set()
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SilencingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    def silence_open_connections(self) -> int:
        """From now on, what the server sends on every connection open now is dropped."""
        done = threading.Event()
        count = [0]

        def mark() -> None:
            self._silenced |= self._open
            count[0] = len(self._open)
            done.set()

        self._loop.call_soon_threadsafe(mark)
        done.wait(10)
        return count[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._open.add(writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, None), self._pipe(up_reader, writer, writer)
            )
        finally:
            self._open.discard(writer)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        client: asyncio.StreamWriter | None,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if client is not None and client in self._silenced:
                    continue  # held open, delivering nothing
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(Exception):
            sink.close()
