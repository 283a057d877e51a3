"""Keys and tokens: both keys valid, constant-time compare, Azure-shaped tokens, rejections."""

from __future__ import annotations

import time

import pytest

from scoring.router.auth import AuthError, bearer, check_key, issue_token, verify_token

pytestmark = pytest.mark.router

SIGNING = b"s" * 32


def test_bearer_parsing() -> None:
    assert bearer(b"Bearer abc") == b"abc"
    assert bearer(b"bearer  abc ") == b"abc"
    for bad in (None, b"", b"Basic abc", b"Bearer", b"Bearer   "):
        with pytest.raises(AuthError):
            bearer(bad)


def test_both_keys_valid_and_nothing_else() -> None:
    check_key(b"k1", b"k1", b"k2")
    check_key(b"k2", b"k1", b"k2")
    check_key(b"k1", b"k1", None)  # no secondary configured
    for wrong in (b"k3", b"k", b"k1k1", b""):
        with pytest.raises(AuthError, match=r"^invalid key$"):
            check_key(wrong, b"k1", b"k2")
    with pytest.raises(AuthError):
        check_key(b"", None, None)


def test_issue_token_shape_and_times() -> None:
    now = 1_800_000_000
    tok = issue_token(SIGNING, "diabetes", ttl_s=3600, now=now)
    assert set(tok) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    assert tok["tokenType"] == "Bearer"
    assert tok["expiryTimeUtc"] == now + 3600
    assert tok["refreshAfterTimeUtc"] == now + 1800
    claims = verify_token(SIGNING, "diabetes", tok["accessToken"], now=now + 10)
    assert claims["aud"] == "diabetes" and claims["exp"] == now + 3600


def test_verify_rejects_expired_forged_other_endpoint_and_garbage() -> None:
    now = time.time()
    tok = issue_token(SIGNING, "diabetes", ttl_s=60, now=now)["accessToken"]
    with pytest.raises(AuthError, match=r"^token expired; get a new one$"):
        verify_token(SIGNING, "diabetes", tok, now=now + 120)
    with pytest.raises(AuthError, match=r"^token not yet valid$"):
        verify_token(SIGNING, "diabetes", tok, now=now - 120)
    with pytest.raises(AuthError, match=r"^token signature is invalid$"):
        verify_token(b"t" * 32, "diabetes", tok)
    with pytest.raises(AuthError, match=r"^token is not for endpoint 'other'$"):
        verify_token(SIGNING, "other", tok)
    with pytest.raises(AuthError, match=r"^token is invalid \(DecodeError\)$"):
        verify_token(SIGNING, "diabetes", "not.a.token")
    # Tampered payload with the original signature.
    head, payload, sig = tok.split(".")
    with pytest.raises(AuthError):
        verify_token(SIGNING, "diabetes", f"{head}.{payload[:-2]}AA.{sig}")
    # Real clock path.
    live = issue_token(SIGNING, "diabetes", ttl_s=60)["accessToken"]
    assert verify_token(SIGNING, "diabetes", live)["iss"] == "ml-endpoints"


def test_alg_none_is_rejected() -> None:
    import jwt

    unsigned = jwt.encode(
        {"iss": "ml-endpoints", "aud": "diabetes", "iat": 1, "exp": 4_000_000_000},
        key=None,
        algorithm="none",
    )
    with pytest.raises(AuthError):
        verify_token(SIGNING, "diabetes", unsigned)


def test_short_signing_key_and_bad_ttl_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue_token(b"short", "diabetes", 60)
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        issue_token(SIGNING, "diabetes", 0)


def _token(iat: int, exp: int) -> str:
    import jwt

    claims = {"iss": "ml-endpoints", "aud": "diabetes", "iat": iat, "exp": exp}
    return jwt.encode(claims, SIGNING, algorithm="HS256")


@pytest.mark.parametrize("now", [None, 1_800_000_000.0])
def test_lifetime_over_the_maximum_and_future_iat_refused(now: float | None) -> None:
    t = int(time.time() if now is None else now)
    # Exactly the maximum, and an iat within the clock skew, pass.
    verify_token(SIGNING, "diabetes", _token(t, t + 3600), now=now, max_lifetime_s=3600)
    verify_token(SIGNING, "diabetes", _token(t + 50, t + 600), now=now, max_lifetime_s=3600)
    with pytest.raises(AuthError, match=r"lifetime 3601 s is over this endpoint's maximum"):
        verify_token(SIGNING, "diabetes", _token(t, t + 3601), now=now, max_lifetime_s=3600)
    century = _token(t, t + 100 * 365 * 86400)
    with pytest.raises(AuthError, match="over this endpoint's maximum"):
        verify_token(SIGNING, "diabetes", century, now=now)
    with pytest.raises(AuthError, match="issued in the future"):
        verify_token(SIGNING, "diabetes", _token(t + 120, t + 600), now=now)
