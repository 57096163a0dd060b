"""The fake Intuit's webhooks: signed notifications POSTed to the site, retried as Intuit does.

``send_webhook`` builds one event in either format, signs the body with the
verifier token (``intuit-signature`` = base64 HMAC-SHA256 of the raw body)
and POSTs it to ``webhook_url``. An answer other than 200, or one slower than
``webhook_answer_timeout`` (Intuit's 3 s), is retried on Intuit's schedule,
compressed by ``webhook_time_scale``; later notifications of the same realm
wait until the first is acknowledged (or given up after
``webhook_max_attempts``). Each realm has its own delivery thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Intuit's retries, in seconds after the first failed attempt (INTUIT.md), then every 6 h.
INTUIT_RETRY_SCHEDULE: tuple[float, ...] = (0, 10, 20, 30, 300, 1200, 7200, 14400, 21600)
RETRY_EVERY = 21600.0
FORMATS = ("cloudevents", "legacy")
_TO_LEGACY = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}
_FROM_LEGACY = {v.lower(): k for k, v in _TO_LEGACY.items()}

#: ``transport(url, body, headers, timeout)`` returns the answer's status; raises on a timeout.
Transport = Callable[[str, bytes, dict[str, str], float], int]


@dataclass
class WebhookDelivery:
    """One notification and what became of it: each attempt's status (or error), timing."""

    realm_id: str
    body: bytes
    signature: str
    events: list[dict[str, Any]]
    attempts: list[tuple[str, float]] = field(default_factory=list)
    acknowledged: bool = False
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it is acknowledged or given up; True when acknowledged."""
        self.done.wait(timeout)
        return self.acknowledged

    @property
    def statuses(self) -> list[str]:
        return [status for status, _ in self.attempts]


def _operation(operation: str) -> str:
    op = operation.strip().lower()
    return _FROM_LEGACY.get(op, op)


def _requests_transport() -> Transport:
    import requests

    session = requests.Session()

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        return session.post(url, data=body, headers=headers, timeout=timeout).status_code

    return post


class WebhookSender:
    """FakeIntuit's webhooks (a mixin); its state is set in ``FakeIntuit.__init__``."""

    webhook_url: str | None
    webhook_verifier_token: str | None
    webhook_retry_schedule: Sequence[float]
    webhook_time_scale: float
    webhook_answer_timeout: float
    webhook_max_attempts: int
    webhook_transport: Transport | None
    webhook_deliveries: list[WebhookDelivery]
    _lock: threading.RLock
    _webhook_stop: threading.Event
    _webhook_queues: dict[str, queue.Queue]

    # ------------------------------------------------------------ building

    def webhook_event(
        self,
        realm_id: str,
        entity: str,
        entity_id: str,
        operation: str,
        format: str = "cloudevents",
        *,
        when: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """One event of ``format`` as Intuit writes it (a CloudEvent, or a legacy entity
        with its ``realmId``)."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        stamp = (when or datetime.now(UTC)).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        op = _operation(operation)
        if format == "legacy":
            return {
                "realmId": str(realm_id),
                "name": entity[:1].upper() + entity[1:],
                "id": str(entity_id),
                "operation": _TO_LEGACY.get(op, op.capitalize()),
                "lastUpdated": stamp,
            }
        return {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "intuit.fake-" + hashlib.sha256(str(realm_id).encode()).hexdigest()[:12],
            "type": f"qbo.{entity.lower()}.{op}.v1",
            "datacontenttype": "application/json",
            "time": stamp,
            "intuitentityid": str(entity_id),
            "intuitaccountid": str(realm_id),
            "data": {},
        }

    def webhook_body(self, events: Iterable[dict[str, Any]], format: str = "cloudevents") -> bytes:
        """The body of one POST carrying ``events`` (from :meth:`webhook_event`)."""
        events = list(events)
        if format == "legacy":
            by_realm: dict[str, list[dict[str, Any]]] = {}
            for e in events:
                entity = {k: v for k, v in e.items() if k != "realmId"}
                by_realm.setdefault(e["realmId"], []).append(entity)
            payload: Any = {
                "eventNotifications": [
                    {"realmId": realm, "dataChangeEvent": {"entities": items}}
                    for realm, items in by_realm.items()
                ]
            }
        else:
            payload = events
        return json.dumps(payload, separators=(",", ":")).encode()

    def sign_webhook(self, body: bytes, token: str | None = None) -> str:
        """``intuit-signature`` for ``body``: base64 HMAC-SHA256 with the verifier token."""
        key = token if token is not None else self.webhook_verifier_token
        if not key:
            raise ValueError("set FakeIntuit(webhook_verifier_token=...)")
        return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()

    # ------------------------------------------------------------ sending

    def stop_webhooks(self) -> None:
        """Stop the delivery threads (a delivery waiting for its retry is given up)."""
        with self._lock:
            self._webhook_stop.set()
            lines, self._webhook_queues = self._webhook_queues, {}
        for line in lines.values():
            while True:
                try:
                    line.get_nowait().done.set()
                except queue.Empty:
                    break
        self._webhook_stop = threading.Event()

    def send_webhook(
        self,
        realm_id: str,
        entity: str,
        entity_id: str,
        operation: str,
        format: str = "cloudevents",
        *,
        wait: bool = True,
        timeout: float | None = 30.0,
    ) -> WebhookDelivery:
        """POST one signed notification to ``webhook_url`` (retried as Intuit does).

        ``wait``: return once it is acknowledged or given up (``timeout`` seconds at
        most); otherwise at once (``delivery.wait()`` later).
        """
        event = self.webhook_event(realm_id, entity, entity_id, operation, format)
        return self.send_webhook_events([event], format, wait=wait, timeout=timeout)

    def send_webhook_events(
        self,
        events: Iterable[dict[str, Any]],
        format: str = "cloudevents",
        *,
        wait: bool = True,
        timeout: float | None = 30.0,
    ) -> WebhookDelivery:
        """POST several events in one notification (several realms allowed: it waits in
        the queue of the first one's realm)."""
        if not self.webhook_url:
            raise ValueError("set FakeIntuit(webhook_url=...) (the site's webhook endpoint)")
        events = list(events)
        if not events:
            raise ValueError("no events")
        body = self.webhook_body(events, format)
        first = events[0]
        realm = str(first.get("intuitaccountid") or first.get("realmId"))
        delivery = WebhookDelivery(realm, body, self.sign_webhook(body), events)
        with self._lock:
            self.webhook_deliveries.append(delivery)
            line = self._webhook_queues.get(realm)
            if line is None:
                line = self._webhook_queues[realm] = queue.Queue()
                threading.Thread(
                    target=self._deliver_forever,
                    args=(line,),
                    name=f"fake-webhooks-{realm}",
                    daemon=True,
                ).start()
        line.put(delivery)
        if wait:
            delivery.wait(timeout)
        return delivery

    def _deliver_forever(self, line: queue.Queue) -> None:
        while not self._webhook_stop.is_set():
            try:
                delivery = line.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(delivery)
            finally:
                delivery.done.set()

    def _retry_delay(self, failures: int) -> float:
        """Seconds after the first failure that attempt ``failures + 1`` is made."""
        schedule = list(self.webhook_retry_schedule)
        index = failures - 1
        if index < len(schedule):
            offset = schedule[index]
        else:
            offset = (schedule[-1] if schedule else 0) + RETRY_EVERY * (index - len(schedule) + 1)
        return offset * self.webhook_time_scale

    def _deliver(self, delivery: WebhookDelivery) -> None:
        post = self.webhook_transport or _requests_transport()
        headers = {
            "Content-Type": "application/cloudevents-batch+json"
            if delivery.body.startswith(b"[")
            else "application/json",
            "intuit-signature": delivery.signature,
            "User-Agent": "fake-intuit-webhooks",
        }
        first_failure: float | None = None
        while len(delivery.attempts) < self.webhook_max_attempts:
            if first_failure is not None:
                due = first_failure + self._retry_delay(len(delivery.attempts))
                pause = due - time.monotonic()
                if pause > 0 and self._webhook_stop.wait(pause):
                    return
            started = time.monotonic()
            try:
                status = str(
                    post(
                        self.webhook_url or "", delivery.body, headers, self.webhook_answer_timeout
                    )
                )
            except Exception as err:  # a timeout, a refused connection: retried alike
                status = type(err).__name__
            elapsed = time.monotonic() - started
            delivery.attempts.append((status, elapsed))
            if status == "200" and elapsed <= self.webhook_answer_timeout:
                delivery.acknowledged = True
                return
            if first_failure is None:
                first_failure = time.monotonic()
