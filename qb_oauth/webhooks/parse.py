"""Both of Intuit's webhook formats, parsed into :class:`ParsedEvent` values.

- CloudEvents 1.0 (Intuit's format since 2026): a JSON array of events;
  ``intuitaccountid`` is the realm, ``type`` is ``qbo.<entity>.<operation>.v1``,
  ``intuitentityid`` the entity's id, ``id`` the event's id (the dedupe key).
- The legacy format: ``{"eventNotifications": [{"realmId": ..., "dataChangeEvent":
  {"entities": [{"name", "id", "operation", "lastUpdated"}]}}]}``, one
  notification per realm.

The CloudEvents SDK (``cloudevents``) is not used: it reads one structured
event, not the JSON batch format Intuit sends (sdk-python issue #130), so it
would only re-check four attributes of dicts already parsed here.

An event missing what identifies it (realm, entity, id) is skipped and
counted, not stored: nothing could route it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

#: The legacy operation names, as the CloudEvents ones.
LEGACY_OPERATIONS = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "merge": "merged",
    "void": "voided",
    "emailed": "emailed",
}


class MalformedPayload(ValueError):
    """The body is not JSON, or neither of Intuit's formats."""


@dataclass(frozen=True)
class ParsedEvent:
    dedupe_key: str
    format: str
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    event_type: str
    occurred_at: datetime | None


@dataclass
class Parsed:
    events: list[ParsedEvent]
    skipped: int = 0

    @property
    def realms(self) -> list[str]:
        return sorted({e.realm_id for e in self.events})


def _text(value: Any, limit: int) -> str:
    if value is None or isinstance(value, dict | list | bool):
        return ""
    return str(value).strip()[:limit]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _key(prefix: str, *parts: str) -> str:
    raw = "\x1f".join(parts)
    if prefix == "ce" and len(raw) <= 200:
        return f"ce:{raw}"
    return f"{prefix}:sha256:{hashlib.sha256(raw.encode()).hexdigest()}"


def _cloudevent(item: Any) -> ParsedEvent | None:
    if not isinstance(item, dict):
        return None
    event_id = _text(item.get("id"), 1000)
    realm = _text(item.get("intuitaccountid"), 32)
    entity_id = _text(item.get("intuitentityid"), 64)
    event_type = _text(item.get("type"), 128)
    parts = event_type.split(".")
    if not (event_id and realm and entity_id) or len(parts) < 3 or not parts[1]:
        return None
    return ParsedEvent(
        dedupe_key=_key("ce", event_id),
        format="cloudevents",
        realm_id=realm,
        entity=parts[1].lower()[:64],
        entity_id=entity_id,
        operation=parts[2].lower()[:32],
        event_type=event_type,
        occurred_at=_time(item.get("time")),
    )


def _legacy(notifications: Any) -> Parsed:
    if not isinstance(notifications, list):
        raise MalformedPayload("eventNotifications is not a list")
    parsed = Parsed([])
    for note in notifications:
        realm = _text(note.get("realmId"), 32) if isinstance(note, dict) else ""
        change = note.get("dataChangeEvent") if isinstance(note, dict) else None
        entities = change.get("entities") if isinstance(change, dict) else None
        if not realm or not isinstance(entities, list):
            parsed.skipped += 1
            continue
        for item in entities:
            name = _text(item.get("name"), 64) if isinstance(item, dict) else ""
            entity_id = _text(item.get("id"), 64) if isinstance(item, dict) else ""
            if not (name and entity_id):
                parsed.skipped += 1
                continue
            raw_op = _text(item.get("operation"), 32)
            operation = LEGACY_OPERATIONS.get(raw_op.lower(), raw_op.lower())
            updated = _text(item.get("lastUpdated"), 64)
            parsed.events.append(
                ParsedEvent(
                    dedupe_key=_key("legacy", realm, name.lower(), entity_id, operation, updated),
                    format="legacy",
                    realm_id=realm,
                    entity=name.lower(),
                    entity_id=entity_id,
                    operation=operation,
                    event_type="",
                    occurred_at=_time(updated),
                )
            )
    return parsed


def parse_payload(body: bytes) -> Parsed:
    """The events of a webhook body (either format); raises :class:`MalformedPayload`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedPayload("the body is not JSON") from err
    if isinstance(data, dict) and "eventNotifications" in data:
        return _legacy(data["eventNotifications"])
    if isinstance(data, dict) and "specversion" in data:
        data = [data]  # one structured CloudEvent, not in a batch
    if not isinstance(data, list):
        raise MalformedPayload("neither a CloudEvents array nor eventNotifications")
    parsed = Parsed([])
    for item in data:
        event = _cloudevent(item)
        if event is None:
            parsed.skipped += 1
        else:
            parsed.events.append(event)
    return parsed
