from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from account_worker.config import DEFAULT_ACTION, REQUIRED, SETTINGS, Config, load_config
from account_worker.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults(env):
    cfg = load_config(env)
    assert cfg.amqp_urls == ("amqp://worker:s3cret@rabbit1:5672/%2F", "amqps://worker:s3cret@rabbit2/vh")
    assert cfg.database_url.startswith("postgresql://")
    assert cfg.queue == "jobs"
    assert cfg.dead_letter_exchange == "jobs.dlx"
    assert cfg.retry_queue == "jobs.retry"
    assert cfg.dead_letter_queue == "jobs.dlq"
    assert (cfg.prefetch, cfg.batch_size, cfg.heartbeat) == (200, 100, 30)
    assert (cfg.max_attempts, cfg.retry_delay_ms) == (5, 5000)
    assert cfg.shutdown_grace == 5.0
    assert cfg.apikey is None
    assert cfg.action == DEFAULT_ACTION
    assert cfg.declare_topology is False
    assert cfg.log_level == "INFO"
    assert cfg.host_cache_ttl == 30.0


def test_retry_queue_and_dead_letter_exchange_follow_queue(env):
    env["WORKER_QUEUE"] = "accounts"
    assert (load_config(env).retry_queue, load_config(env).dead_letter_exchange) == ("accounts.retry", "accounts.dlx")
    env["WORKER_RETRY_QUEUE"] = "custom.retry"
    assert load_config(env).retry_queue == "custom.retry"


def test_all_values_set(env):
    env.update(
        {
            "WORKER_QUEUE": "q",
            "WORKER_DEAD_LETTER_EXCHANGE": "q.dlx",
            "WORKER_RETRY_QUEUE": "q.later",
            "WORKER_PREFETCH": "10000",
            "WORKER_BATCH_SIZE": "1",
            "WORKER_HEARTBEAT": "600",
            "WORKER_MAX_ATTEMPTS": "100",
            "WORKER_RETRY_DELAY_MS": "0",
            "WORKER_SHUTDOWN_GRACE": "6.5",
            "WORKER_APIKEY": "k3y",
            "WORKER_ACTION": "mypkg.mod:run",
            "WORKER_DECLARE_TOPOLOGY": "yes",
            "WORKER_LOG_LEVEL": "debug",
            "WORKER_HOST_CACHE_TTL": "0",
        }
    )
    cfg = load_config(env)
    assert (cfg.queue, cfg.dead_letter_exchange, cfg.retry_queue) == ("q", "q.dlx", "q.later")
    assert (cfg.prefetch, cfg.batch_size, cfg.heartbeat, cfg.max_attempts) == (10000, 1, 600, 100)
    assert cfg.retry_delay_ms == 0
    assert cfg.shutdown_grace == 6.5
    assert cfg.apikey == "k3y"
    assert cfg.action == "mypkg.mod:run"
    assert cfg.declare_topology is True
    assert cfg.log_level == "DEBUG"
    assert cfg.host_cache_ttl == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_AMQP_URLS", ""),
        ("WORKER_AMQP_URLS", "http://rabbit"),
        ("WORKER_AMQP_URLS", "amqp://a,,amqp://b"),
        ("WORKER_AMQP_URLS", "amqp://"),
        ("WORKER_AMQP_URLS", "amqp://host:notaport"),
        ("WORKER_DATABASE_URL", ""),
        ("WORKER_DATABASE_URL", "mysql://db/x"),
        ("WORKER_QUEUE", "has space"),
        ("WORKER_DEAD_LETTER_EXCHANGE", "a b"),
        ("WORKER_RETRY_QUEUE", "jobs"),
        ("WORKER_DELIVERY_LIMIT", "1"),
        ("WORKER_DELIVERY_LIMIT", "3"),
        ("WORKER_DELIVERY_LIMIT", "1001"),
        ("WORKER_PREFETCH", "0"),
        ("WORKER_PREFETCH", "10001"),
        ("WORKER_PREFETCH", "abc"),
        ("WORKER_PREFETCH", "1.5"),
        ("WORKER_BATCH_SIZE", "0"),
        ("WORKER_BATCH_SIZE", "1001"),
        ("WORKER_HEARTBEAT", "4"),
        ("WORKER_HEARTBEAT", "601"),
        ("WORKER_MAX_ATTEMPTS", "0"),
        ("WORKER_MAX_ATTEMPTS", "101"),
        ("WORKER_RETRY_DELAY_MS", "-1"),
        ("WORKER_RETRY_DELAY_MS", "4294967296"),
        ("WORKER_SHUTDOWN_GRACE", "0"),
        ("WORKER_SHUTDOWN_GRACE", "7"),
        ("WORKER_SHUTDOWN_GRACE", "-1"),
        ("WORKER_SHUTDOWN_GRACE", "nan"),
        ("WORKER_SHUTDOWN_GRACE", "soon"),
        ("WORKER_ACTION", "no_colon"),
        ("WORKER_ACTION", "mod:"),
        ("WORKER_DECLARE_TOPOLOGY", "maybe"),
        ("WORKER_LOG_LEVEL", "LOUD"),
        ("WORKER_HOST_CACHE_TTL", "-1"),
        ("WORKER_HOST_CACHE_TTL", "inf"),
    ],
)
def test_bad_values_name_the_variable(env, name, value):
    env[name] = value
    with pytest.raises(ConfigError) as info:
        load_config(env)
    message = str(info.value)
    assert name in message
    assert "\n" not in message
    assert "s3cret" not in message and "dbpass" not in message


@pytest.mark.parametrize("name", ["WORKER_AMQP_URLS", "WORKER_DATABASE_URL"])
def test_required(env, name):
    del env[name]
    with pytest.raises(ConfigError, match=name):
        load_config(env)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False), ("", False)],
)
def test_bool(env, value, expected):
    env["WORKER_DECLARE_TOPOLOGY"] = value
    assert load_config(env).declare_topology is expected


def test_repr_hides_secrets(env):
    env["WORKER_APIKEY"] = "topsecretkey"
    cfg = load_config(env)
    for text in (repr(cfg), str(cfg)):
        assert "s3cret" not in text
        assert "dbpass" not in text
        assert "topsecretkey" not in text
        assert "worker:***@rabbit1" in text
    assert set(cfg.secrets()) == {"s3cret", "dbpass", "topsecretkey"}


def test_config_is_frozen(env):
    cfg = load_config(env)
    with pytest.raises(AttributeError):
        cfg.queue = "other"  # type: ignore[misc]


def test_secrets_longest_first_so_none_leaves_part_of_another(env):
    env["WORKER_APIKEY"] = "s3cret-and-more"
    assert load_config(env).secrets()[0] == "s3cret-and-more"


def test_config_keeps_keyword_construction_with_defaults():
    cfg = Config(amqp_urls=("amqp://h",), database_url="postgresql://db/x", queue="q", retry_queue="q.retry")
    assert (cfg.prefetch, cfg.dead_letter_exchange, cfg.apikey) == (200, "jobs.dlx", None)


def test_every_config_field_is_a_setting_with_its_own_variable():
    assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(Config)]
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    assert all(s.env.startswith("WORKER_") for s in SETTINGS)


def test_repr_shows_every_setting_in_order(env):
    text = repr(load_config(env))
    positions = [text.index(f"{s.name}=") for s in SETTINGS]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    "setting",
    [s for s in SETTINGS if s.default not in (REQUIRED, None) and s.default_from is None],
    ids=lambda s: s.env,
)
def test_documented_default_parses_to_the_default(setting):
    """What the README shows as the default is what an operator gets by writing it out."""
    assert setting.parse(setting.env, setting.readme_default.strip("`")) == setting.default


def _readme_settings_rows() -> list[tuple[str, str, str]]:
    section = README.read_text(encoding="utf-8").split("## Environment", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.fullmatch(r"\| `(WORKER_[A-Z_]+)` \| (.+?) \| (.+?) \|", line.strip())
        if match:
            rows.append((match[1], match[2], match[3]))
    return rows


def test_readme_settings_table_matches_the_settings():
    expected = [(s.env, s.readme_default, s.doc) for s in SETTINGS]
    table = "\n".join(f"| `{env}` | {default} | {doc} |" for env, default, doc in expected)
    assert _readme_settings_rows() == expected, f"worker/README.md settings table should read:\n{table}"
