"""Which URLs qb_oauth may send its secrets to: https, or plain http to this machine.

One rule for the system check (``qb_oauth.E003``) and for run time
(:func:`qb_oauth.client.endpoints`, :class:`qb_oauth.client.QuickBooksOAuth2Session`).
Plain http is allowed to loopback only: ``127.0.0.0/8``, ``::1`` and the name
``localhost``, where the fake Intuit runs. Other names under ``.localhost`` are
not included: whether they reach this machine is up to the resolver.

Anything else must be https, unless the developer set oauthlib's own
``OAUTHLIB_INSECURE_TRANSPORT``: then oauthlib's rule (anything goes) applies, as
it always did. qb_oauth never sets that variable.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from oauthlib.oauth2 import is_secure_transport

from .exceptions import ImproperlyConfigured


# Cached: every call to Intuit checks its URL, and the answer depends on the URL alone.
@functools.lru_cache(maxsize=256)
def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine: 127.0.0.0/8, ::1 or ``localhost``."""
    try:
        host = urlsplit(url).hostname  # lower case, IPv6 brackets removed, userinfo dropped
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_plain_loopback(url: str) -> bool:
    """Plain http to this machine: what qb_oauth's sessions allow without oauthlib's variable."""
    return urlsplit(url).scheme == "http" and is_loopback(url)


@functools.lru_cache(maxsize=256)
def is_allowed(url: str) -> bool:
    """https anywhere, or plain http to loopback (the rule of check ``qb_oauth.E003``)."""
    return urlsplit(url).scheme == "https" or is_plain_loopback(url)


def shown(url: str) -> str:
    """``url`` for a message: scheme, host, port and path, without userinfo or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def require_allowed(url: str, key: str) -> None:
    """Raise :class:`ImproperlyConfigured` naming ``key`` unless ``url`` may carry secrets.

    Allowed: :func:`is_allowed`, or anything oauthlib itself allows (the developer set
    ``OAUTHLIB_INSECURE_TRANSPORT``).
    """
    if is_allowed(url) or is_secure_transport(url):
        return
    raise ImproperlyConfigured(
        f"{key} is not https ({shown(url)}): qb_oauth sends credentials and tokens only "
        "over https, or over plain http to this machine (127.0.0.1, ::1, localhost). "
        "Use Intuit's https endpoints (see check qb_oauth.E003)."
    )
