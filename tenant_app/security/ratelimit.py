"""Login throttling: at most N failed attempts per (username, client) in a sliding window.

Kept in process memory: the tenant app runs as one uvicorn worker per county VM (SQLite writes are
serialised through one process anyway), so one in-memory table sees every attempt. A restart
forgets the counts, which only ever makes the limit more lenient for a few minutes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_FAILURES = 5
DEFAULT_WINDOW_S = 300.0


@dataclass(frozen=True)
class Throttle:
    """Whether a login may be tried now; when not, how long until the oldest failure expires."""

    allowed: bool
    retry_after_s: int = 0


class LoginRateLimiter:
    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    @staticmethod
    def _key(username: str, client: str) -> tuple[str, str]:
        # Usernames are case-insensitive at login, so "Clerk" and "clerk" share one budget.
        return (username.strip().casefold(), client)

    def _prune(self, window: deque[float], now: float) -> None:
        while window and now - window[0] >= self.window_s:
            window.popleft()

    def check(self, username: str, client: str) -> Throttle:
        now = self._clock()
        with self._lock:
            window = self._failures[self._key(username, client)]
            self._prune(window, now)
            if len(window) < self.max_failures:
                return Throttle(allowed=True)
            retry = math.ceil(window[0] + self.window_s - now)
            return Throttle(allowed=False, retry_after_s=max(retry, 1))

    def record_failure(self, username: str, client: str) -> None:
        with self._lock:
            self._failures[self._key(username, client)].append(self._clock())

    def reset(self, username: str, client: str) -> None:
        """A successful login clears the user's failures from that client."""
        with self._lock:
            self._failures.pop(self._key(username, client), None)
