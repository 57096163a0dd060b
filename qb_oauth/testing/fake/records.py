"""What the fake remembers (companies, grants, authorization codes) and how their values look."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

ACCOUNTING = "com.intuit.quickbooks.accounting"
PAYMENT = "com.intuit.quickbooks.payment"
SCOPES = (ACCOUNTING, PAYMENT, "openid", "profile", "email", "phone", "address")

_ALNUM_LOWER = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


@dataclass
class Company:
    """A QuickBooks company the consent page offers."""

    realm_id: str
    name: str
    country: str = "US"
    legal_name: str | None = None

    def __post_init__(self) -> None:
        self.realm_id = str(self.realm_id)
        if not self.realm_id.isdigit():
            raise ValueError("realm_id must be a numeric string")


DEFAULT_COMPANIES = (
    ("9341452859140132", "Sandbox Company US 1", "US"),
    ("9130357992276326", "Sandbox Company US 2", "US"),
    ("4620816365281947510", "Sandbox Company CA", "CA"),
)


@dataclass(eq=False)
class Grant:
    """One consent: a company, scopes, and the tokens issued for it."""

    realm_id: str | None
    scopes: list[str]
    client_id: str
    environment: str
    created_at: float
    hard_expires_at: float
    current_refresh_token: str
    refresh_issued_at: float
    refresh_expires_at: float
    clock: Any = field(repr=False)  # anything with now(): the fake, so a swapped clock applies
    previous_refresh_token: str | None = None
    previous_refresh_dies_at: float = 0.0
    revoked: bool = False
    revoked_at: float | None = None
    auth_time: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    access_token_expiry: dict[str, float] = field(default_factory=dict, repr=False)
    refresh_tokens: list[str] = field(default_factory=list, repr=False)

    @property
    def access_tokens(self) -> set[str]:
        """The access tokens of this grant that still work."""
        if self.revoked:
            return set()
        now = self.clock.now()
        return {t for t, exp in self.access_token_expiry.items() if exp > now}

    @property
    def live(self) -> bool:
        """Not revoked, and its refresh token still usable (rolling and hard expiry)."""
        now = self.clock.now()
        return not self.revoked and now < self.hard_expires_at and now < self.refresh_expires_at


@dataclass(eq=False)
class Code:
    """An authorization code, from the consent to its one exchange."""

    value: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    realm_id: str | None
    expires_at: float
    auth_time: float
    used: bool = False
    grant: Grant | None = None


# ------------------------------------------------- values, as Intuit's look


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def code_value(now: float) -> str:
    """An authorization code issued at ``now``."""
    return f"AB11{int(now)}{_random_text(_ALNUM, 36)}"


def refresh_token_value(expires: float) -> str:
    """A refresh token dying at ``expires``, shaped like ``RT1-206-H0-1770282300mebf…``."""
    return f"RT1-206-H0-{int(expires)}{_random_text(_ALNUM_LOWER, 20)}"


def access_token_value() -> str:
    """An access token: a compact JWE ("dir", A128CBC-HS256) as Intuit issues today.

    Five segments, about 630 characters.
    """
    header = _b64url(b'{"enc":"A128CBC-HS256","alg":"dir"}')
    return ".".join(
        [
            header,
            "",
            _b64url(secrets.token_bytes(16)),
            _b64url(secrets.token_bytes(400)),
            _b64url(secrets.token_bytes(16)),
        ]
    )


def key_id() -> str:
    """A ``kid`` for the id-token signing key."""
    return _random_text(_ALNUM_LOWER, 16)
