from __future__ import annotations

import io
import logging

from account_worker.logsetup import LogfmtFormatter, log_event, setup_logging
from account_worker.redact import redact, redact_url


def test_redact_url():
    assert redact_url("amqp://user:pw@host:5672/vh") == "amqp://user:***@host:5672/vh"
    assert redact_url("postgresql://u:p%40ss@db/x") == "postgresql://u:***@db/x"
    assert redact_url("amqp://host/vh") == "amqp://host/vh"
    assert redact_url("amqp://user@host") == "amqp://user@host"


def test_redact_text():
    text = 'failed amqps://w:abc@r1 payload {"apikey": "zzz", "x": 1} apikey=yyy password=ppp'
    out = redact(text)
    assert "abc" not in out and "zzz" not in out and "yyy" not in out and "ppp" not in out
    assert "amqps://w:***@r1" in out
    assert '"apikey": "***"' in out
    assert "apikey=***" in out


def test_redact_literal_secrets():
    assert redact("token LEAKED here", ["LEAKED", ""]) == "token *** here"


def test_one_line_logfmt_with_redaction():
    stream = io.StringIO()
    logger = setup_logging("INFO", ["hunter2"], stream=stream)
    log_event(logger, logging.INFO, "job_done", message_id="m 1", account_uuid="u", host=None, note="pw hunter2")
    try:
        raise ValueError("multi\nline amqp://a:b@c")
    except ValueError:
        log_event(logger, logging.ERROR, "worker_crashed", exc_info=True)
    log_event(logger, logging.DEBUG, "hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == 'level=INFO event=job_done message_id="m 1" account_uuid=u note="pw ***"'
    assert lines[1].startswith("level=ERROR event=worker_crashed exc_type=ValueError traceback=")
    assert "a:***@c" in lines[1] and ":b@" not in lines[1]
    logging.getLogger().handlers.clear()


def test_formatter_quotes_values():
    formatter = LogfmtFormatter()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "evt", None, None)
    record.fields = {"reason": 'say "hi"', "empty": "", "n": 3}
    assert formatter.format(record) == 'level=WARNING event=evt reason="say \\"hi\\"" empty="" n=3'
