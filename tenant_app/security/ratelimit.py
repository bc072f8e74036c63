"""Login throttling: failed attempts counted per (user, client), per user and per client address.

Three sliding windows, each with its own limit, so that neither guessing one password from many
addresses nor trying one password on many users from one address gets far:

- per (user, client): 5 failures, the everyday limit a user who mistypes meets;
- per user, from any address: 20, so a distributed guess against one account is bounded too,
  while one guessing address alone cannot lock its owner out everywhere (it reaches 5, not 20);
- per client, for any user: 30, against one address spraying a common password across users.

An attempt is counted when it *starts* (`begin`), under the lock that also checks the limits, and
refunded if it succeeds (`succeeded`). Checking first and recording the failure after the password
hash had been verified let 30 parallel wrong passwords all through (issue 14, item 5): each passed
the check before any had been recorded. Now at most the limit's worth of attempts are in flight.

Which address is "the client" is decided before this module sees it: the direct peer, or the
address the gateway reports when the peer is a trusted proxy (security/proxies.py).

Kept in process memory: the tenant app runs as one uvicorn worker per county VM (SQLite writes are
serialised through one process anyway), so one in-memory table sees every attempt. A restart
forgets the counts, which only ever makes the limit more lenient for a few minutes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MAX_FAILURES = 5
DEFAULT_MAX_PER_USER = 20
DEFAULT_MAX_PER_CLIENT = 30
DEFAULT_WINDOW_S = 300.0
# A username is attacker-chosen text: only this much of it names a bucket, so a megabyte-long
# name costs no more memory than a real one.
_NAME_CHARS = 128
# Buckets left empty by expired failures are swept when the table grows past this (and then
# past twice the size left after each sweep), so random usernames cannot grow it without bound.
_SWEEP_AT = 4096


class Scope(StrEnum):
    USER_CLIENT = "user_client"
    USER = "user"
    CLIENT = "client"


@dataclass(frozen=True)
class Throttle:
    """Whether a login may be tried now; when not, how long until the oldest failure expires."""

    allowed: bool
    retry_after_s: int = 0


Key = tuple[Scope, str, str]


class LoginRateLimiter:
    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.limits = {Scope.USER_CLIENT: max_failures, Scope.USER: max_per_user,
                       Scope.CLIENT: max_per_client}
        self._clock = clock
        self._failures: dict[Key, deque[float]] = {}
        self._lock = threading.Lock()
        self._sweep_at = _SWEEP_AT

    @staticmethod
    def _keys(username: str, client: str) -> tuple[Key, Key, Key]:
        # Usernames are case-insensitive at login, so "Clerk" and "clerk" share one budget.
        name = username.strip().casefold()[:_NAME_CHARS]
        return ((Scope.USER_CLIENT, name, client), (Scope.USER, name, ""), (Scope.CLIENT, "", client))

    def _window(self, key: Key, now: float) -> deque[float]:
        window = self._failures.get(key)
        if window is None:
            window = self._failures[key] = deque()
        while window and now - window[0] >= self.window_s:
            window.popleft()
        return window

    def _throttle(self, keys: tuple[Key, ...], now: float) -> Throttle:
        """Refused while any of the windows is full, until the oldest failure of the fullest expires."""
        waits = []
        for key in keys:
            window = self._window(key, now)
            if len(window) >= self.limits[key[0]]:
                waits.append(math.ceil(window[0] + self.window_s - now))
        if not waits:
            return Throttle(allowed=True)
        return Throttle(allowed=False, retry_after_s=max(max(waits), 1))

    def _sweep(self, now: float) -> None:
        if len(self._failures) <= self._sweep_at:
            return
        for key in list(self._failures):
            if not self._window(key, now):
                del self._failures[key]
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._failures))

    def begin(self, username: str, client: str) -> Throttle:
        """Start an attempt: refused if a limit is reached, else counted as a failure at once.

        The check and the count are one step under the lock, so parallel attempts cannot all pass
        the check before any is counted. Call `succeeded` if the password turns out right.
        """
        now = self._clock()
        keys = self._keys(username, client)
        with self._lock:
            self._sweep(now)
            throttle = self._throttle(keys, now)
            if throttle.allowed:
                for key in keys:
                    self._failures[key].append(now)
            return throttle

    def succeeded(self, username: str, client: str) -> None:
        """The attempt `begin` counted was right: the user's failures from that client are cleared,
        and this attempt no longer counts against the user or the client as a whole."""
        user_client, user, by_client = self._keys(username, client)
        with self._lock:
            self._failures.pop(user_client, None)
            for key in (user, by_client):
                window = self._failures.get(key)
                if window:
                    window.pop()  # this attempt's entry, or one as recent: the counts are what matter

    def check(self, username: str, client: str) -> Throttle:
        """Whether an attempt would be allowed now, counting nothing (see `begin` for log-ins)."""
        now = self._clock()
        with self._lock:
            return self._throttle(self._keys(username, client), now)

    def record_failure(self, username: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            self._sweep(now)
            for key in self._keys(username, client):
                self._window(key, now).append(now)

    def reset(self, username: str, client: str) -> None:
        """A successful login clears the user's failures from that client."""
        with self._lock:
            self._failures.pop(self._keys(username, client)[0], None)
