"""The ``intuit-signature`` check: base64(HMAC-SHA256(verifier token, raw body)).

Checked over the raw bytes, in constant time, against every configured token
(a list while a new one is rolled in), before anything is parsed or stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

#: The header Intuit signs with (``request.headers`` is case-insensitive).
SIGNATURE_HEADER = "intuit-signature"


def sign(body: bytes, token: str) -> str:
    """The signature Intuit sends for ``body`` with verifier token ``token``."""
    digest = hmac.new(token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(body: bytes, signature: str | None, tokens: Iterable[str]) -> bool:
    """Whether ``signature`` is the HMAC of ``body`` under one of ``tokens``.

    Every token is tried (no early exit), each compared with
    :func:`hmac.compare_digest` over the decoded digest.
    """
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    matched = False
    for token in tokens:
        expected = hmac.new(token.encode(), body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    return matched
