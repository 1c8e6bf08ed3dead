"""The message contract: turn a delivery into a Job or say why not.

Every value taken from a message (body fields, properties, headers) that can reach the
database, a reply or a log line is type-checked and bounded here; the bounds are the
constants below and the "Message contract" table of the README.  parse_job raises
InvalidMessage(reason) for anything else, never another exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from account_worker.errors import InvalidMessage

ATTEMPT_HEADER = "x-attempt"
# Where a sender that cannot set the message_id property (Debian's amqp-publish
# sets headers, not message_id) puts it; the property wins when both are there.
MESSAGE_ID_HEADER = "x-message-id"
DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by quorum queues on a message returned to the queue

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32  # nesting of the body (the object itself is depth 1)
MAX_MESSAGE_ID_LENGTH = 255
MAX_ACCOUNT_UUID_LENGTH = 255
MAX_APIKEY_LENGTH = 1024
MAX_PROPERTY_LENGTH = 255  # reply_to, correlation_id
MAX_ATTEMPT = 1000  # above any WORKER_MAX_ATTEMPTS (<= 100); job_runs.attempts is an int4
# ASCII visible characters: message ids travel in logs, replies and job_runs.
_MESSAGE_ID = re.compile(rf"[!-~]{{1,{MAX_MESSAGE_ID_LENGTH}}}")


@dataclass(frozen=True)
class Job:
    message_id: str
    apikey: str = field(repr=False)
    account_uuid: str
    attempt: int = 1
    payload: Mapping[str, Any] | None = None


def _printable(value: str) -> bool:
    """No control or other unprintable characters and no lone surrogates (not UTF-8 encodable)."""
    if not value.isprintable():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _attempt(headers: Mapping[str, Any] | None) -> int:
    if not headers or headers.get(ATTEMPT_HEADER) is None:
        return 1
    raw = headers[ATTEMPT_HEADER]
    if isinstance(raw, bytes | str) and 0 < len(raw) <= len(str(MAX_ATTEMPT)) and raw.isascii() and raw.isdigit():
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise InvalidMessage(f"header {ATTEMPT_HEADER} must be an integer")
    if not 1 <= value <= MAX_ATTEMPT:
        raise InvalidMessage(f"header {ATTEMPT_HEADER} must be between 1 and {MAX_ATTEMPT}")
    return value


def delivery_count(headers: Mapping[str, Any] | None) -> int:
    """How many times the broker got the message back unsettled (quorum queues' x-delivery-count); 0 if unknown."""
    raw = (headers or {}).get(DELIVERY_COUNT_HEADER)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    return 0


def _text_field(data: Mapping[str, Any], name: str, max_length: int) -> str:
    if name not in data:
        raise InvalidMessage(f"missing field {name}")
    value = data[name]
    if not isinstance(value, str):
        raise InvalidMessage(f"field {name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidMessage(f"field {name} is empty")
    if "\x00" in value:
        raise InvalidMessage(f"field {name} contains a NUL character")
    if len(value) > max_length:
        raise InvalidMessage(f"field {name} is longer than {max_length} characters")
    if not _printable(value):
        raise InvalidMessage(f"field {name} contains unprintable characters")
    return value


def _message_id(message_id: object) -> str:
    if message_id is None or (isinstance(message_id, str) and not message_id.strip()):
        raise InvalidMessage("missing message_id property")
    if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
        raise InvalidMessage(
            f"message_id property is malformed (1..{MAX_MESSAGE_ID_LENGTH} visible ASCII characters expected)"
        )
    return message_id


def message_id_of(message_id: object, headers: Mapping[str, Any] | None) -> Any:
    """The property message_id, else the header x-message-id (checked by parse_job like the property)."""
    if message_id is not None or not isinstance(headers, Mapping):
        return message_id
    return headers.get(MESSAGE_ID_HEADER)


def shown_message_id(message_id: object) -> str | None:
    """A message_id as a log line may show it: as is if valid, else an ASCII repr cut to 80 characters."""
    if message_id is None:
        return None
    if isinstance(message_id, str) and _MESSAGE_ID.fullmatch(message_id):
        return message_id
    return ascii(message_id)[:80]


def check_property(name: str, value: object) -> None:
    """reply_to and correlation_id: absent, or a printable string of at most MAX_PROPERTY_LENGTH."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_PROPERTY_LENGTH or not _printable(value):
        raise InvalidMessage(f"{name} property is malformed (up to {MAX_PROPERTY_LENGTH} printable characters)")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _strings_printable(value: object) -> bool:
    """Every key and string in a parsed JSON value is UTF-8 encodable (JSON escapes allow lone surrogates)."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _json_object(body: bytes) -> dict[str, Any]:
    if not isinstance(body, bytes | bytearray):
        raise InvalidMessage("body is not bytes")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidMessage(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("body is not UTF-8") from None
    try:
        data = _DECODER.decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise InvalidMessage("body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"body must be a JSON object, got {type(data).__name__}")
    # The walks below only run when the text could hold what they look for (cheap scans first).
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        raise InvalidMessage(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    # Strict UTF-8 has no surrogates: only a \uD800..\uDFFF escape can make one.
    if ("\\ud" in text or "\\uD" in text) and not _strings_printable(data):
        raise InvalidMessage("body contains a string that is not valid Unicode")
    return data


def parse_job(
    body: bytes,
    message_id: str | None,
    headers: Mapping[str, Any] | None,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
) -> Job:
    """Parse a delivery into a Job; raise InvalidMessage(reason) for anything malformed."""
    checked_id = _message_id(message_id)
    check_property("reply_to", reply_to)
    check_property("correlation_id", correlation_id)
    if headers is not None and not isinstance(headers, Mapping):
        raise InvalidMessage("headers are not a table")
    attempt = _attempt(headers)
    data = _json_object(body)
    apikey = _text_field(data, "apikey", MAX_APIKEY_LENGTH)
    account_uuid = _text_field(data, "account_uuid", MAX_ACCOUNT_UUID_LENGTH).strip()
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidMessage(f"field payload must be an object, got {type(payload).__name__}")
    return Job(message_id=checked_id, apikey=apikey, account_uuid=account_uuid, attempt=attempt, payload=payload)
