"""One bad message never hurts another: a poison corpus through the deployed workers.

Malformed messages of distinct kinds (encodings, JSON shapes and types, out-of-range and
oversized values in body, properties and headers, NUL bytes, deep nesting, huge bodies)
are interleaved with valid jobs: every valid job is recorded once, every malformed one
reaches the DLQ with its reason, no worker restarts, nothing is left behind.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable

import pika

from deployment import Env
from support.containers import run_in
from support.db import recorded, wait_recorded
from support.jobs import JobPublisher

VALID_PER_MALFORMED = 5
TAG_HEADER = "x-test-id"  # identifies a malformed message whose message_id is itself malformed
APIKEY = "it"


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _job(account: str = "1234", **extra: object) -> bytes:
    return _body(apikey=APIKEY, account_uuid=account, **extra)


def _nested(depth: int) -> bytes:
    return b'{"apikey": "it", "account_uuid": "1234", "payload": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


# kind: (body, message_id suffix or None for "no message_id", extra properties, headers, reason must contain)
Corpus = dict[str, tuple[bytes, str | None, dict, dict | None, str]]


def corpus(unknown: str) -> Corpus:
    big = "x" * 10_000
    return {
        "invalid-utf8": (b"\xff\xfe\xfd", "", {}, None, "not UTF-8"),
        "truncated-utf8": (b'{"apikey": "it", "account_uuid": "12\xe2\x82"}', "", {}, None, "not UTF-8"),
        "latin1": ('{"apikey": "it", "account_uuid": "café"}'.encode("latin-1"), "", {}, None, "not UTF-8"),
        "not-json": (b"{not json", "", {}, None, "not JSON"),
        "empty-body": (b"", "", {}, None, "not JSON"),
        "nul-byte-body": (b"\x00", "", {}, None, "not JSON"),
        "raw-nul-in-string": (b'{"apikey": "it", "account_uuid": "12\x0034"}', "", {}, None, "not JSON"),
        "json-array": (b"[1, 2]", "", {}, None, "JSON object"),
        "json-string": (b'"job"', "", {}, None, "JSON object"),
        "json-null": (b"null", "", {}, None, "JSON object"),
        "json-number": (b"12345678901234567890", "", {}, None, "JSON object"),
        "missing-apikey": (_body(account_uuid="1234"), "", {}, None, "missing field apikey"),
        "missing-account": (_body(apikey=APIKEY), "", {}, None, "missing field account_uuid"),
        "apikey-int": (_body(apikey=7, account_uuid="1234"), "", {}, None, "apikey must be a string"),
        "account-int": (_body(apikey=APIKEY, account_uuid=1234), "", {}, None, "account_uuid must be a string"),
        "account-list": (_body(apikey=APIKEY, account_uuid=["1234"]), "", {}, None, "account_uuid must be a string"),
        "account-null": (_body(apikey=APIKEY, account_uuid=None), "", {}, None, "account_uuid must be a string"),
        "account-object": (_body(apikey=APIKEY, account_uuid={"id": 1}), "", {}, None, "must be a string"),
        "account-empty": (_job(""), "", {}, None, "account_uuid is empty"),
        "account-blank": (_job("   "), "", {}, None, "account_uuid is empty"),
        "account-nul-escaped": (_job("12\u000034"), "", {}, None, "NUL"),
        "account-surrogate": (b'{"apikey": "it", "account_uuid": "\\ud800"}', "", {}, None, "not valid Unicode"),
        "account-escape-seq": (_job("12\u001b[31m"), "", {}, None, "unprintable"),
        "account-newline": (_job("12\n34"), "", {}, None, "unprintable"),
        "account-256": (_job("1" * 256), "", {}, None, "longer than 255"),
        "account-10k": (_job(big), "", {}, None, "longer than 255"),
        "apikey-2k": (_body(apikey="k" * 2000, account_uuid="1234"), "", {}, None, "longer than 1024"),
        "unknown-account": (_job(unknown), "", {}, None, "unknown account"),
        "payload-list": (_job(payload=[1, 2]), "", {}, None, "payload must be an object"),
        "payload-string": (_job(payload="p"), "", {}, None, "payload must be an object"),
        "payload-surrogate-key": (
            b'{"apikey": "it", "account_uuid": "1234", "payload": {"\\udfff": 1}}',
            "",
            {},
            None,
            "not valid Unicode",
        ),
        "nested-40": (_nested(40), "", {}, None, "nested deeper"),
        "nested-100k": (b"[" * 100_000 + b"]" * 100_000, "", {}, None, "not JSON"),
        "nan": (b'{"apikey": "it", "account_uuid": "1234", "n": NaN}', "", {}, None, "not JSON"),
        "infinity": (b'{"apikey": "it", "account_uuid": "1234", "n": -Infinity}', "", {}, None, "not JSON"),
        "int-5000-digits": (
            b'{"apikey": "it", "account_uuid": "1234", "n": ' + b"9" * 5000 + b"}",
            "",
            {},
            None,
            "not JSON",
        ),
        "body-300k": (_job(payload={"blob": "x" * 300_000}), "", {}, None, "larger than"),
        "body-4m": (_job(payload={"blob": "x" * 4_000_000}), "", {}, None, "larger than"),
        "attempt-int8": (_job(), "", {}, {"x-attempt": 2**62}, "x-attempt"),
        "attempt-int4-overflow": (_job(), "", {}, {"x-attempt": 2**31}, "x-attempt"),
        "attempt-zero": (_job(), "", {}, {"x-attempt": 0}, "x-attempt"),
        "attempt-negative": (_job(), "", {}, {"x-attempt": -5}, "x-attempt"),
        "attempt-text": (_job(), "", {}, {"x-attempt": "three"}, "x-attempt"),
        "attempt-bool": (_job(), "", {}, {"x-attempt": True}, "x-attempt"),
        "attempt-long-digits": (_job(), "", {}, {"x-attempt": "9" * 200}, "x-attempt"),
        "attempt-list": (_job(), "", {}, {"x-attempt": [1]}, "x-attempt"),
        "no-message-id": (_job(), None, {}, None, "missing message_id"),
        "message-id-space": (_job(), " with space", {}, None, "message_id"),
        "message-id-non-ascii": (_job(), "-café", {}, None, "message_id"),
        "message-id-control": (_job(), "-\x01", {}, None, "message_id"),
        "reply-to-newline": (_job(), "", {"reply_to": "a\nb"}, None, "reply_to"),
        "correlation-id-nul": (_job(), "", {"correlation_id": "c\x00"}, None, "correlation_id"),
    }


def _publish_malformed(ch, tag: str, malformed: tuple[bytes, str | None, dict, dict | None, str]) -> None:
    """Publish one corpus entry; tag (prefix + kind) goes in TAG_HEADER and starts its message_id."""
    body, suffix, props, headers, _ = malformed
    tagged = {TAG_HEADER: tag, **(headers or {})}
    ch.basic_publish(
        "jobs",
        "jobs",
        body,
        pika.BasicProperties(
            message_id=None if suffix is None else f"{tag}{suffix}",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=tagged,
            **props,
        ),
        mandatory=True,
    )


def _take_dead_letters(url: str, prefix: str) -> dict[str, dict]:
    """Take the DLQ's messages tagged with prefix (x-test-id); leave the others. tag -> headers."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    found: dict[str, dict] = {}
    others = False
    while True:
        method, props, _ = ch.basic_get("jobs.dlq", auto_ack=False)
        if method is None:
            break
        tag = (props.headers or {}).get(TAG_HEADER)
        if isinstance(tag, bytes):
            tag = tag.decode("utf-8", "replace")
        if isinstance(tag, str) and tag.startswith(prefix):
            found[tag] = props.headers
            ch.basic_ack(method.delivery_tag)
        else:
            others = True
    if others:
        ch.basic_nack(0, multiple=True, requeue=True)
    conn.close()
    return found


def _sv_pids(env: Env, host: str) -> dict[str, str]:
    """runit service -> pid of the worker it supervises (sv status)."""
    out = run_in(host, "sh", "-c", f"sv status /etc/service/{env.worker_name}-*", check=False).stdout
    pids = {}
    for line in out.splitlines():
        # run: /etc/service/account-worker-1: (pid 123) 45s; run: log: (pid 67) 45s
        if line.startswith("run:") and "(pid " in line:
            service = line.split(":", 2)[1].strip()
            pids[service] = line.split("(pid ", 1)[1].split(")", 1)[0]
    return pids


def _queue_depths(url: str) -> dict[str, int]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    depths = {q: ch.queue_declare(q, passive=True).method.message_count for q in ("jobs", "jobs.retry")}
    conn.close()
    return depths


def _wait(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def test_poison_corpus_interleaved_with_valid_jobs(env: Env, publisher: JobPublisher) -> None:
    prefix = f"poison-{uuid.uuid4().hex[:8]}-"
    unknown = f"{prefix}no-such-account"
    kinds = corpus(unknown)
    before = {host: _sv_pids(env, host) for host in env.worker_hosts}
    accounts = itertools.cycle(sorted(env.accounts))

    valid = 0
    for kind, malformed in kinds.items():
        _publish_malformed(publisher.ch, f"{prefix}{kind}", malformed)
        for _ in range(VALID_PER_MALFORMED):
            publisher.job(f"{prefix}ok-{valid:05d}", next(accounts))
            valid += 1

    got = wait_recorded(env.database_url, f"{prefix}ok-", valid, deadline_s=120)
    dead: dict[str, dict] = {}
    _wait(lambda: len(dead.update(_take_dead_letters(env.amqp_url, prefix)) or dead) >= len(kinds), 60)
    depths: dict[str, int] = {}
    _wait(lambda: not any((depths.update(_queue_depths(env.amqp_url)) or depths).values()), 30)
    after = {host: _sv_pids(env, host) for host in env.worker_hosts}
    restarts = sum(before[h].get(s) != after[h].get(s) for h in before for s in before[h] | after[h])
    reasons = {tag.removeprefix(prefix): headers.get("x-worker-reason") for tag, headers in dead.items()}
    with_reason = sum(1 for r in reasons.values() if r)
    malformed_recorded = recorded(env.database_url, prefix).distinct - got.distinct

    env.results.append(
        {
            "test": "poison corpus",
            "sent": valid + len(kinds),
            "recorded": got.distinct,
            "duplicates": got.duplicates,
            "dead_lettered": len(dead),
            "valid_sent": valid,
            "malformed_sent": len(kinds),
            "malformed_dead_lettered_with_reason": with_reason,
            "malformed_recorded": malformed_recorded,
            "restarts": restarts,
            "left_in_queues": depths,
        }
    )
    print(
        f"\npoison corpus: valid sent {valid}, recorded {got.distinct} (duplicates {got.duplicates}); "
        f"malformed sent {len(kinds)}, dead-lettered with reason {with_reason}; restarts {restarts}; "
        f"left in queues {depths}"
    )
    assert (got.distinct, got.duplicates) == (valid, 0)
    assert sorted(reasons) == sorted(kinds), f"missing from the DLQ: {sorted(set(kinds) - set(reasons))}"
    wrong = {k: r for k, r in reasons.items() if not r or kinds[k][4] not in r}
    assert not wrong, f"unexpected reasons: {wrong}"
    assert malformed_recorded == 0
    assert restarts == 0, f"workers restarted: {before} -> {after}"
    assert all(before.values()), "no supervised worker found"
    assert not any(depths.values()), f"left in queues: {depths}"
