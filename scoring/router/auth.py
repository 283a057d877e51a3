"""Endpoint authentication: primary/secondary keys and short-lived signed tokens.

Keys: ``Authorization: Bearer <key>``; primary and secondary are both valid at once so a key
can be rotated with no downtime, and are compared in constant time. Tokens (``aml_token``
mode) are HS256 JWTs signed with the endpoint's token signing key and scoped to the endpoint
name; ``issue_token`` returns the shape Azure's token API returns (accessToken,
expiryTimeUtc, refreshAfterTimeUtc, tokenType). Failure reasons never include a secret.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

import jwt

if TYPE_CHECKING:
    from jwt.types import Options

ISSUER = "ml-endpoints"
ALGORITHM = "HS256"
#: Longest token lifetime accepted unless the router config says otherwise.
DEFAULT_MAX_LIFETIME_S = 3600
#: How far in the future a token's ``iat`` may be (clocks of issuer and router differ).
MAX_CLOCK_SKEW_S = 60
#: Minimum HMAC key length PyJWT accepts without a warning (RFC 7518 §3.2).
MIN_SIGNING_KEY_BYTES = 32


class AuthError(Exception):
    """A request that is not authorized; ``reason`` is safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def bearer(header: bytes | None) -> bytes:
    """The credential in an ``Authorization: Bearer X`` header value.

    Raises:
        AuthError: header missing, or not the Bearer scheme.
    """
    if not header:
        raise AuthError("missing Authorization header; send 'Authorization: Bearer <key or token>'")
    scheme, _, cred = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not cred.strip():
        raise AuthError("Authorization header is not 'Bearer <key or token>'")
    return cred.strip()


def check_key(credential: bytes, primary: bytes | None, secondary: bytes | None) -> None:
    """Accept ``credential`` if it equals the primary or the secondary key (constant time).

    Both comparisons always run so timing does not say which key matched or how far.

    Raises:
        AuthError: the credential matches neither key.
    """
    ok_primary = hmac.compare_digest(credential, primary) if primary else False
    ok_secondary = hmac.compare_digest(credential, secondary) if secondary else False
    if not (ok_primary or ok_secondary):
        raise AuthError("invalid key")


def _key(signing_key: bytes | str) -> bytes:
    key = signing_key.encode() if isinstance(signing_key, str) else signing_key
    if len(key) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(
            f"token signing key is {len(key)} bytes; use at least "
            f"{MIN_SIGNING_KEY_BYTES} (e.g. `openssl rand -hex 32`)"
        )
    return key


def issue_token(
    signing_key: bytes | str, endpoint_name: str, ttl_s: int = 3600, now: float | None = None
) -> dict[str, object]:
    """A signed token for ``endpoint_name``, valid ``ttl_s`` seconds, in Azure's shape.

    ``refreshAfterTimeUtc`` is halfway to expiry: clients fetch a new token then, so one is
    always valid while the old one is still in use. Times are Unix seconds (UTC), as Azure's
    ``get-credentials`` returns them.
    """
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be > 0 (got {ttl_s})")
    issued = int(time.time() if now is None else now)
    expiry = issued + int(ttl_s)
    claims = {"iss": ISSUER, "aud": endpoint_name, "iat": issued, "nbf": issued, "exp": expiry}
    token = jwt.encode(claims, _key(signing_key), algorithm=ALGORITHM)
    return {
        "accessToken": token,
        "tokenType": "Bearer",
        "expiryTimeUtc": expiry,
        "refreshAfterTimeUtc": issued + int(ttl_s) // 2,
    }


def verify_token(
    signing_key: bytes | str,
    endpoint_name: str,
    token: bytes | str,
    now: float | None = None,
    leeway_s: int = 5,
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
    max_skew_s: int = MAX_CLOCK_SKEW_S,
) -> dict[str, object]:
    """The claims of ``token`` if it is signed with ``signing_key``, for this endpoint, unexpired.

    A token whose lifetime (``exp - iat``) exceeds ``max_lifetime_s``, or issued more than
    ``max_skew_s`` in the future, is refused even when its signature is good: a leaked
    signing key or a client's bad clock must not yield a token that lives for years.

    Raises:
        AuthError: expired, not yet valid, too long-lived, for another endpoint, forged or
            malformed.
    """
    options: Options = {"require": ["exp", "iat", "aud", "iss"]}
    try:
        if now is None:
            claims = jwt.decode(
                token,
                _key(signing_key),
                algorithms=[ALGORITHM],
                audience=endpoint_name,
                issuer=ISSUER,
                leeway=leeway_s,
                options={**options, "verify_iat": False},
            )
            _check_lifetime(claims, time.time(), max_lifetime_s, max_skew_s)
            return claims
        claims = jwt.decode(
            token,
            _key(signing_key),
            algorithms=[ALGORITHM],
            audience=endpoint_name,
            issuer=ISSUER,
            options={**options, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        if int(claims["exp"]) + leeway_s <= now:
            raise jwt.ExpiredSignatureError("Signature has expired")
        if int(claims.get("nbf", 0)) - leeway_s > now:
            raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
        _check_lifetime(claims, now, max_lifetime_s, max_skew_s)
        return claims
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired; get a new one") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthError("token not yet valid") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError(f"token is not for endpoint {endpoint_name!r}") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("token signature is invalid") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"token is invalid ({type(exc).__name__})") from exc


def _check_lifetime(
    claims: dict[str, object], now: float, max_lifetime_s: int, max_skew_s: int
) -> None:
    """Refuse a token issued in the future or living longer than the endpoint allows."""
    try:
        iat, exp = int(claims["iat"]), int(claims["exp"])  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise AuthError("token is invalid (iat and exp must be numbers)") from exc
    if iat - max_skew_s > now:
        raise AuthError("token is issued in the future (iat); check the issuer's clock")
    if exp - iat > max_lifetime_s:
        raise AuthError(
            f"token lifetime {exp - iat} s is over this endpoint's maximum ({max_lifetime_s} s); "
            "get a new one from POST /token"
        )
