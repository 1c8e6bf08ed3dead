"""The message contract: turn a delivery body into a Job or say why not."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from account_worker.errors import InvalidMessage

ATTEMPT_HEADER = "x-attempt"
MAX_FIELD_LENGTH = 1024


@dataclass(frozen=True)
class Job:
    message_id: str
    apikey: str = field(repr=False)
    account_uuid: str
    attempt: int = 1
    payload: Mapping[str, Any] | None = None


def _attempt(headers: Mapping[str, Any] | None) -> int:
    if not headers or headers.get(ATTEMPT_HEADER) is None:
        return 1
    raw = headers[ATTEMPT_HEADER]
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if isinstance(raw, bool):
        raise InvalidMessage(f"header {ATTEMPT_HEADER} must be an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidMessage(f"header {ATTEMPT_HEADER} must be an integer") from None
    if value < 1:
        raise InvalidMessage(f"header {ATTEMPT_HEADER} must be >= 1")
    return value


def _text_field(data: Mapping[str, Any], name: str) -> str:
    if name not in data:
        raise InvalidMessage(f"missing field {name}")
    value = data[name]
    if not isinstance(value, str):
        raise InvalidMessage(f"field {name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidMessage(f"field {name} is empty")
    if "\x00" in value:
        raise InvalidMessage(f"field {name} contains a NUL character")
    if len(value) > MAX_FIELD_LENGTH:
        raise InvalidMessage(f"field {name} is longer than {MAX_FIELD_LENGTH} characters")
    return value


def parse_job(body: bytes, message_id: str | None, headers: Mapping[str, Any] | None) -> Job:
    """Parse a delivery into a Job; raise InvalidMessage(reason) for anything malformed."""
    if not message_id or not str(message_id).strip():
        raise InvalidMessage("missing message_id property")
    if "\x00" in str(message_id) or len(str(message_id)) > MAX_FIELD_LENGTH:
        raise InvalidMessage("message_id property is malformed")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("body is not UTF-8") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidMessage("body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"body must be a JSON object, got {type(data).__name__}")
    apikey = _text_field(data, "apikey")
    account_uuid = _text_field(data, "account_uuid").strip()
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidMessage(f"field payload must be an object, got {type(payload).__name__}")
    return Job(
        message_id=str(message_id),
        apikey=apikey,
        account_uuid=account_uuid,
        attempt=_attempt(headers),
        payload=payload,
    )
