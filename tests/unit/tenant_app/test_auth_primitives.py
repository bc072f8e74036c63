"""Password hashing, session cookies, CSRF comparison, bearer-token parsing and the login throttle."""

from __future__ import annotations

import pytest

from tenant_app.security import csrf, passwords, sessions, tokens
from tenant_app.security.ratelimit import LoginRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_hash_is_argon2_and_verifies() -> None:
    digest = passwords.hash_password("正確密碼-123")
    assert digest.startswith("$argon2id$")
    assert "正確密碼" not in digest
    assert passwords.verify_password("正確密碼-123", digest)
    assert not passwords.verify_password("wrong", digest)


def test_same_password_hashes_differently_each_time() -> None:
    assert passwords.hash_password("pw") != passwords.hash_password("pw")


def test_verify_against_missing_or_malformed_hash_is_false() -> None:
    assert not passwords.verify_password("pw", None)
    assert not passwords.verify_password("pw", "not-a-hash")


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError):
        passwords.hash_password("")


def test_cookie_round_trip_keeps_fields() -> None:
    codec = sessions.SessionCodec("s" * 32)
    state = sessions.CookieState(session_id="abc")
    state.set_flash("已簽證", sessions.FlashKind.OK)
    back = codec.loads(codec.dumps(state))
    assert (back.session_id, back.anon_csrf) == ("abc", state.anon_csrf)
    assert back.pop_flash() == ("已簽證", sessions.FlashKind.OK)
    assert back.flash is None


def test_tampered_or_foreign_cookie_gives_anonymous_state() -> None:
    codec = sessions.SessionCodec("s" * 32)
    cookie = codec.dumps(sessions.CookieState(session_id="abc"))
    assert codec.loads(cookie[:-2] + "xx").session_id is None
    assert sessions.SessionCodec("t" * 32).loads(cookie).session_id is None
    assert codec.loads(None).session_id is None


def test_expired_cookie_is_anonymous() -> None:
    codec = sessions.SessionCodec("s" * 32, max_age_s=-1)
    assert codec.loads(codec.dumps(sessions.CookieState(session_id="abc"))).session_id is None


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        sessions.SessionCodec("short")


def test_session_id_digest_hides_the_id() -> None:
    raw = sessions.new_secret_token()
    digest = sessions.session_id_digest(raw)
    assert len(digest) == 64 and raw not in digest
    assert digest == sessions.session_id_digest(raw)


def test_csrf_compare() -> None:
    assert csrf.csrf_valid("abc", "abc")
    assert not csrf.csrf_valid("abc", "abd")
    assert not csrf.csrf_valid("abc", None)
    assert not csrf.csrf_valid("", "")


def test_tokens_are_random_and_digest_stably() -> None:
    a, b = tokens.new_token(), tokens.new_token()
    assert a != b and a.startswith(tokens.TOKEN_PREFIX)
    assert tokens.token_digest(a) == tokens.token_digest(a)
    assert tokens.token_digest(a) != tokens.token_digest(b)
    assert a not in tokens.token_digest(a)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)],
)
def test_parse_bearer(header: str | None, expected: str | None) -> None:
    assert tokens.parse_bearer(header) == expected


def test_rate_limit_blocks_after_five_failures_then_recovers() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(max_failures=5, window_s=300, clock=clock)
    for _ in range(5):
        assert limiter.check("clerk", "1.2.3.4").allowed
        limiter.record_failure("clerk", "1.2.3.4")
    blocked = limiter.check("Clerk", "1.2.3.4")
    assert not blocked.allowed and 0 < blocked.retry_after_s <= 300
    # Another client or another user is not affected.
    assert limiter.check("clerk", "5.6.7.8").allowed
    assert limiter.check("accountant", "1.2.3.4").allowed
    clock.now += 300
    assert limiter.check("clerk", "1.2.3.4").allowed


def test_rate_limit_reset_on_success() -> None:
    limiter = LoginRateLimiter(max_failures=2, window_s=300, clock=FakeClock())
    limiter.record_failure("u", "c")
    limiter.reset("u", "c")
    limiter.record_failure("u", "c")
    assert limiter.check("u", "c").allowed
