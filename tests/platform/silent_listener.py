"""A loopback port that answers nothing, for tests that assert no request reached it."""

from __future__ import annotations

import socket

__all__ = ["SilentListener"]


class SilentListener:
    """Listens on ``host`` (a loopback address) and never accepts on its own: the kernel still completes
    every connection attempt into the backlog, so ``connections()`` counts whoever tried to connect."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.seen = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.seen
            conn.close()
            self.seen += 1

    def close(self) -> None:
        self.sock.close()
