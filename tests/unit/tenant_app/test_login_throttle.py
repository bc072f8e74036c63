"""The log-in throttle counts attempts atomically, per (user, client), per user and per client; the
client is the peer unless the peer is a trusted proxy (issue 14, item 5)."""

from __future__ import annotations

import threading

import pytest

from tenant_app.security import proxies
from tenant_app.security.proxies import TrustedProxies, TrustedProxiesError
from tenant_app.security.ratelimit import LoginRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parallel_attempts_cannot_all_pass_the_check_before_one_is_counted() -> None:
    limiter = LoginRateLimiter(max_failures=5)
    start = threading.Barrier(30)
    allowed: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        start.wait()
        result = limiter.begin("clerk", "192.0.2.7").allowed
        with lock:
            allowed.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(allowed) == [False] * 25 + [True] * 5


def test_a_success_is_refunded_and_clears_the_users_failures_from_that_client() -> None:
    limiter = LoginRateLimiter(max_failures=2, clock=FakeClock())
    assert limiter.begin("u", "c").allowed  # a failure
    assert limiter.begin("u", "c").allowed
    limiter.succeeded("u", "c")
    assert limiter.begin("u", "c").allowed and limiter.begin("u", "c").allowed
    assert not limiter.begin("u", "c").allowed


def test_one_user_is_limited_across_clients_and_one_client_across_users() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(max_failures=5, window_s=300, clock=clock, max_per_user=20, max_per_client=30)
    for client in ("a", "b", "c", "d"):
        assert all(limiter.begin("clerk", client).allowed for _ in range(5))
        assert not limiter.begin("clerk", client).allowed  # the per (user, client) limit
    refused = limiter.begin("clerk", "e")  # a fifth address: the user's 20 are spent
    assert not refused.allowed and 0 < refused.retry_after_s <= 300
    assert limiter.begin("accountant", "e").allowed  # another user from that address is not
    # One address trying one password on many users: 30 in the window, whichever users.
    assert all(limiter.begin(f"user{i}", "sprayer").allowed for i in range(30))
    assert not limiter.begin("user30", "sprayer").allowed
    clock.now += 300
    assert limiter.begin("clerk", "e").allowed and limiter.begin("user31", "sprayer").allowed


def test_the_old_check_and_record_api_shares_the_same_windows() -> None:
    limiter = LoginRateLimiter(max_failures=3, clock=FakeClock())
    for _ in range(3):
        limiter.record_failure("Clerk ", "c")
    assert not limiter.check("clerk", "c").allowed
    assert not limiter.begin("clerk", "c").allowed


def test_random_usernames_do_not_grow_the_table_without_bound() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(window_s=10, clock=clock, max_per_client=10**9)
    for i in range(20_000):
        limiter.begin(f"nobody-{i}" + "x" * 1000, "c")
        clock.now += 0.01
    keys = limiter._failures  # the bound is the point of this test
    assert len(keys) < 12_000  # expired buckets were swept; live ones are the last 10 s (1000 names)
    assert max(len(key[1]) for key in keys) <= 128


# ------------------------------------------------------------------------------- trusted proxies


GATEWAY = TrustedProxies.parse("10.0.2.2")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ["198.51.100.9"], "203.0.113.5"),  # not a proxy: its header is its own claim
        ("10.0.2.2", ["198.51.100.9"], "198.51.100.9"),
        ("10.0.2.2", [], "10.0.2.2"),
        ("10.0.2.2", ["6.6.6.6, 198.51.100.9"], "198.51.100.9"),  # the client's own entry is ignored
        ("10.0.2.2", ["6.6.6.6", "198.51.100.9"], "198.51.100.9"),  # two header lines, in order
        ("10.0.2.2", ["198.51.100.9, 10.0.2.2"], "198.51.100.9"),  # a trusted hop is skipped
        ("10.0.2.2", ["unknown"], "10.0.2.2"),  # not an address: the gateway's own budget
        ("10.0.2.2", ["198.51.100.9:4711"], "10.0.2.2"),
        ("10.0.2.2", [" 2001:db8::7 "], "2001:db8::7"),
        (None, ["198.51.100.9"], None),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str | None) -> None:
    assert proxies.client_address(peer, forwarded, GATEWAY) == expected


def test_nobody_is_trusted_by_default() -> None:
    nobody = TrustedProxies.parse("")
    assert proxies.client_address("127.0.0.1", ["198.51.100.9"], nobody) == "127.0.0.1"
    assert proxies.forwarded_https("127.0.0.1", ["https"], nobody) is None


def test_networks_and_lists_parse_and_typos_are_refused() -> None:
    trusted = TrustedProxies.parse("10.0.2.2, 192.0.2.0/24 ::1")
    assert trusted.trusts("192.0.2.200") and trusted.trusts("::1") and trusted.trusts("10.0.2.2")
    assert not trusted.trusts("10.0.2.3") and not trusted.trusts("testclient")
    with pytest.raises(TrustedProxiesError, match="gateway"):
        TrustedProxies.parse("10.0.2.2, gateway")


def test_forwarded_proto_is_believed_from_the_gateway_only() -> None:
    assert proxies.forwarded_https("10.0.2.2", ["https"], GATEWAY) is True
    assert proxies.forwarded_https("10.0.2.2", ["https, http"], GATEWAY) is False  # the nearest says
    assert proxies.forwarded_https("10.0.2.2", [], GATEWAY) is None
    assert proxies.forwarded_https("203.0.113.5", ["https"], GATEWAY) is None
