"""A TCP proxy that can play a server restart, for the crash matrix.

The engine's processes reach PostgreSQL through it; `restart()` does to them what a
restart of PostgreSQL would (every open connection dropped at once, new ones refused
for a while, then accepted again), without touching the PostgreSQL that other people
share. Threads: two per proxied connection, one accepting; a test has a few dozen.
"""
from __future__ import annotations

import socket
import threading
import time

BUFFER = 65536


class TcpProxy:
    """127.0.0.1:`port` -> `target`; `with TcpProxy(...)` or `close()` at the end."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.connections = 0            # accepted so far, in total (a test can see reconnects)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self._cut_on: bytes | None = None
        self._cut_then: bytes | None = None
        self.cuts = 0                   # connections cut by `cut_on`
        self._listen()

    # --- what a test does ------------------------------------------------------------------

    def restart(self, down_s: float = 2.0) -> None:
        """Drop every proxied connection at once and refuse new ones (connection refused,
        as from a server that is not listening) for `down_s`, then accept again."""
        self._stop_listening()
        self.drop_all()
        time.sleep(down_s)  # the outage itself, not a wait for something to happen
        self._listen()

    def cut_on(self, pattern: bytes, then: bytes | None = None) -> None:
        """Once: the next client message containing `pattern` (with `then`: the next message
        containing `then` on the same connection after it, e.g. its COMMIT) reaches the
        server, then the connection is cut before the answer comes back. The server did the
        work; the client cannot know (a restart at the worst moment: the "unknown commit")."""
        self._cut_on, self._cut_then = pattern, then

    def drop_all(self) -> int:
        """Close both ends of every proxied connection; how many there were."""
        with self._lock:
            socks, self._open = list(self._open), set()
        for sock in socks:
            _close(sock)
        return len(socks) // 2

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self.drop_all()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the machinery -----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: restart() or close()
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # a restart began meanwhile
                    _close(client), _close(server)
                    continue
                self._open.update((client, server))
                self.connections += 1
            for a, b, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, upstream), name="proxy-pipe", daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        waiting_for: bytes | None = None   # this connection's `then`, once its pattern went by
        try:
            while True:
                data = source.recv(BUFFER)
                if not data:
                    break
                sink.sendall(data)
                if not upstream:
                    continue
                if waiting_for is not None and waiting_for in data:
                    self.cuts += 1
                    break
                if self._cut_on is not None and self._cut_on in data:
                    with self._lock:
                        mine, self._cut_on = self._cut_on is not None, None
                    if mine and self._cut_then is None:
                        self.cuts += 1
                        break
                    if mine:
                        waiting_for = self._cut_then
        except OSError:
            pass
        with self._lock:
            self._open.discard(source), self._open.discard(sink)
        _close(source), _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
