from __future__ import annotations

import json

import pytest

from account_worker.errors import InvalidMessage
from account_worker.messages import delivery_count, message_id_of, parse_job, shown_message_id


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_valid_job():
    job = parse_job(body(apikey="SECRETKEY", account_uuid="u-1", payload={"a": 1}), "m-1", None)
    assert (job.message_id, job.apikey, job.account_uuid, job.attempt) == ("m-1", "SECRETKEY", "u-1", 1)
    assert job.payload == {"a": 1}
    assert "SECRETKEY" not in repr(job)


def test_attempt_header():
    assert parse_job(body(apikey="k", account_uuid="u"), "m", {"x-attempt": 3}).attempt == 3
    assert parse_job(body(apikey="k", account_uuid="u"), "m", {"x-attempt": b"2"}).attempt == 2
    assert parse_job(body(apikey="k", account_uuid="u"), "m", {"other": 1}).attempt == 1


def test_message_id_from_the_header_when_the_property_is_missing():
    assert message_id_of(None, {"x-message-id": "m-h"}) == "m-h"
    assert message_id_of("m-p", {"x-message-id": "m-h"}) == "m-p"
    assert message_id_of(None, None) is None
    assert message_id_of(None, {"other": "x"}) is None
    # A header value is checked like the property: bytes or a space are refused.
    with pytest.raises(InvalidMessage, match="message_id property is malformed"):
        parse_job(body(apikey="k", account_uuid="u"), message_id_of(None, {"x-message-id": b"m"}), None)


@pytest.mark.parametrize(
    ("raw", "message_id", "headers", "reason"),
    [
        (b"\xff\xfe", "m", None, "not UTF-8"),
        (b"{not json", "m", None, "not JSON"),
        (b"[1, 2]", "m", None, "JSON object"),
        (b'"text"', "m", None, "JSON object"),
        (b"null", "m", None, "JSON object"),
        (body(account_uuid="u"), "m", None, "missing field apikey"),
        (body(apikey="k"), "m", None, "missing field account_uuid"),
        (body(apikey="", account_uuid="u"), "m", None, "apikey is empty"),
        (body(apikey="k", account_uuid="  "), "m", None, "account_uuid is empty"),
        (body(apikey=1, account_uuid="u"), "m", None, "apikey must be a string"),
        (body(apikey="k", account_uuid=["u"]), "m", None, "account_uuid must be a string"),
        (body(apikey="k", account_uuid=None), "m", None, "account_uuid must be a string"),
        (body(apikey="k", account_uuid="u\x00"), "m", None, "NUL"),
        (body(apikey="k", account_uuid="u", payload=[1]), "m", None, "payload must be an object"),
        (body(apikey="k", account_uuid="u"), None, None, "message_id"),
        (body(apikey="k", account_uuid="u"), "", None, "message_id"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": "x"}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": 0}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": True}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": 2**40}, "between 1 and 1000"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": 1001}, "between 1 and 1000"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": -3}, "between 1 and 1000"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": 2.5}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": "9" * 5000}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m", {"x-attempt": "\u00b2"}, "x-attempt"),
        (body(apikey="k", account_uuid="u"), "m" * 256, None, "message_id"),
        (body(apikey="k", account_uuid="u"), "has space", None, "message_id"),
        (body(apikey="k", account_uuid="u"), "line\nbreak", None, "message_id"),
        (body(apikey="k", account_uuid="u"), "caf\u00e9", None, "message_id"),
        (body(apikey="k", account_uuid="u"), 42, None, "message_id"),
        (body(apikey="k", account_uuid="u" * 256), "m", None, "longer than 255"),
        (body(apikey="k" * 1025, account_uuid="u"), "m", None, "longer than 1024"),
        (body(apikey="k", account_uuid="u\x1b[31m"), "m", None, "unprintable"),
        (b'{"apikey": "k", "account_uuid": "\\ud800"}', "m", None, "not valid Unicode"),
        (b'{"apikey": "k", "account_uuid": "u", "payload": {"\\udfff": 1}}', "m", None, "not valid Unicode"),
        (b'{"apikey": "k", "account_uuid": "u", "n": NaN}', "m", None, "not JSON"),
        (b'{"apikey": "k", "account_uuid": "u", "n": ' + b"9" * 5000 + b"}", "m", None, "not JSON"),
        (
            b'{"apikey": "k", "account_uuid": "u", "payload": ' + b"[" * 40 + b"]" * 40 + b"}",
            "m",
            None,
            "nested deeper",
        ),
        (b" " * (256 * 1024 + 1), "m", None, "larger than"),
        (b"\x00", "m", None, "not JSON"),
    ],
)
def test_invalid(raw, message_id, headers, reason):
    with pytest.raises(InvalidMessage) as info:
        parse_job(raw, message_id, headers)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [("reply_to", "r" * 256), ("reply_to", "a\nb"), ("correlation_id", "x\x00"), ("correlation_id", 7)],
)
def test_invalid_reply_properties(name, value):
    with pytest.raises(InvalidMessage) as info:
        parse_job(body(apikey="k", account_uuid="u"), "m", None, **{name: value})
    assert name in info.value.reason


def test_bounds_at_their_limits_are_accepted():
    payload = {"a": 1}
    for _ in range(30):
        payload = {"a": payload}
    job = parse_job(body(apikey="k" * 1024, account_uuid="u" * 255, payload=payload), "m" * 255, {"x-attempt": 1000})
    assert job.attempt == 1000 and len(job.account_uuid) == 255


def test_delivery_count_header():
    assert delivery_count(None) == 0
    assert delivery_count({"x-delivery-count": 4}) == 4
    assert delivery_count({"x-delivery-count": "4"}) == 0
    assert delivery_count({"x-delivery-count": True}) == 0


def test_message_id_as_logs_show_it():
    assert shown_message_id("m-1") == "m-1"
    assert shown_message_id(None) is None
    assert shown_message_id("a\nb" * 100) == ascii("a\nb" * 100)[:80]


def test_deeply_nested_json_is_invalid_not_a_crash():
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidMessage):
        parse_job(raw, "m", None)
