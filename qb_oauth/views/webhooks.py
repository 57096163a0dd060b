"""Intuit's webhook endpoint: verify, store, answer; the work happens on the cluster.

The ``intuit-signature`` is checked over the raw body before anything is
parsed or stored. The answer is 200 once the events are committed, well
inside Intuit's 3 seconds: the signal is sent by
``qb_oauth.tasks.process_webhook_events`` (inline, after the commit, without a
cluster or with ``sync``). See docs/webhooks.md.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from ..conf import qb_settings
from ..webhooks.parse import MalformedPayload, parse_payload
from ..webhooks.process import dispatch_on_commit
from ..webhooks.store import store_events
from ..webhooks.verify import SIGNATURE_HEADER, signature_matches

logger = logging.getLogger("qb_oauth.webhooks")


def _refuse(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain")
    # Our own log line says why; Django's "Unauthorized: /..." would be a second one.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The raw body, or None when it is over ``limit`` (by its Content-Length or its size)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)  # not request.body: DATA_UPLOAD_MAX_MEMORY_SIZE is not ours
    return None if len(body) > limit else body


@csrf_exempt
@require_POST
def webhooks(request: HttpRequest) -> HttpResponse:
    """``qb_oauth:webhooks``: Intuit's change notifications, in either format."""
    limit = qb_settings.WEBHOOK_MAX_BODY
    remote = request.META.get("REMOTE_ADDR", "?")
    body = _read_body(request, limit)
    if body is None:
        logger.warning("Webhook refused from %s: body over %s bytes.", remote, limit)
        return _refuse(413, "Payload too large.")
    signature = request.headers.get(SIGNATURE_HEADER)
    tokens = qb_settings.WEBHOOK_VERIFIER_TOKEN
    if not tokens or not signature_matches(body, signature, tokens):
        why = (
            "no WEBHOOK_VERIFIER_TOKEN configured"
            if not tokens
            else ("missing signature" if not signature else "bad signature")
        )
        logger.warning("Webhook refused from %s: %s (%s bytes).", remote, why, len(body))
        return _refuse(401, "Invalid signature.")
    try:
        parsed = parse_payload(body)
    except MalformedPayload as err:
        logger.warning("Webhook refused from %s: %s.", remote, err)
        return _refuse(400, "Malformed payload.")
    stored = store_events(parsed.events)
    if parsed.skipped:
        logger.warning(
            "Webhook from %s: %s event(s) without a realm, entity or id skipped.",
            remote,
            parsed.skipped,
        )
    logger.info(
        "Webhook: %s event(s) of %s realm(s), %s new.",
        stored.received,
        len(parsed.realms),
        stored.new,
    )
    # After the store's commit: in sync mode this processes inline, before the answer.
    dispatch_on_commit(stored.pending)
    return JsonResponse({"received": stored.received, "new": stored.new})
