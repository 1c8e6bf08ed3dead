from __future__ import annotations

import json

import pytest

from account_worker.errors import InvalidMessage
from account_worker.messages import parse_job


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
    ],
)
def test_invalid(raw, message_id, headers, reason):
    with pytest.raises(InvalidMessage) as info:
        parse_job(raw, message_id, headers)
    assert reason in info.value.reason


def test_deeply_nested_json_is_invalid_not_a_crash():
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidMessage):
        parse_job(raw, "m", None)
