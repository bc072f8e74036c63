"""A stand-in for the gateway's runtime socket as far as the request log goes: every `show events
rum` is answered with what `ring()` gives at that moment (the real HAProxy is
tests/integration/monitoring/test_rum_stream.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path


class StandInRing:
    def __init__(self, path: Path, ring: Callable[[], bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.answered = 0
        self._ring = ring
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                if conn.recv(100).startswith(b"show events rum"):
                    conn.sendall(self._ring())
                    self.answered += 1

    def close(self) -> None:
        self._server.close()
