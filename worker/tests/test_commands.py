"""The allow-list: parsing, parameter validation and shell quoting (pure, no SSH)."""

from __future__ import annotations

import json
import shlex

import pytest

from account_worker.commands import load_allow_list, parse_allow_list, request_of
from account_worker.errors import ConfigError, InvalidMessage

ALLOW = {
    "uptime": {"argv": ["uptime"]},
    "echo": {"argv": ["echo", "say:{text}"], "params": {"text": {"pattern": "(?s).{1,200}"}}},
    "tail": {
        "argv": ["tail", "-n", "{lines}", "/var/log/{name}.log"],
        "params": {"lines": {"type": "int", "min": 1, "max": 1000}, "name": {"pattern": "[a-z]{1,16}"}},
        "retry_exit_codes": [75],
    },
    "say": {"argv": ["echo", "{text}"], "params": {"text": {"pattern": "[ -~]{1,200}"}}},
    "grep": {
        "argv": ["grep", "-e", "{expr}", "--", "{file}"],
        "params": {"expr": {"pattern": "[ -~]{1,64}", "allow_leading_dash": True}, "file": {"pattern": "[a-z/-]+"}},
    },
    "offset": {"argv": ["seq", "{n}"], "params": {"n": {"type": "int", "min": -9, "max": 9}}},
}
COMMANDS = parse_allow_list(json.dumps(ALLOW))

HOSTILE = [
    "; touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a' ; touch /tmp/pwned; echo '",
    'a" ; touch /tmp/pwned ; "',
    "x && rm -rf / || true | cat > /tmp/pwned",
    "\\'; touch /tmp/pwned #",
    "${IFS}touch${IFS}/tmp/pwned",
    "line\nbreak",
]


def test_a_command_without_parameters_is_its_argv():
    assert request_of(COMMANDS, {"command": "uptime"}).line == "uptime"


@pytest.mark.parametrize("text", HOSTILE)
def test_every_parameter_stays_one_word_for_the_remote_shell(text):
    line = request_of(COMMANDS, {"command": "echo", "params": {"text": text}}).line
    assert shlex.split(line) == ["echo", f"say:{text}"]


def test_typed_parameters_are_rendered_in_place():
    request = request_of(COMMANDS, {"command": "tail", "params": {"lines": 20, "name": "syslog"}})
    assert shlex.split(request.line) == ["tail", "-n", "20", "/var/log/syslog.log"]
    assert request.command.retry_exit_codes == {75}


def test_a_leading_dash_passes_only_where_the_allow_list_permits_it():
    """CWE-88: quoting keeps a value one word, but a word that begins with "-" is still an option. Elsewhere in
    a word, or where the entry says allow_leading_dash (here after "-e", which ends the option), it is text."""
    assert shlex.split(request_of(COMMANDS, {"command": "say", "params": {"text": "a -n"}}).line) == ["echo", "a -n"]
    assert shlex.split(request_of(COMMANDS, {"command": "echo", "params": {"text": "-n"}}).line) == ["echo", "say:-n"]
    line = request_of(COMMANDS, {"command": "grep", "params": {"expr": "-v", "file": "/etc/hosts"}}).line
    assert shlex.split(line) == ["grep", "-e", "-v", "--", "/etc/hosts"]
    assert shlex.split(request_of(COMMANDS, {"command": "offset", "params": {"n": 3}}).line) == ["seq", "3"]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (None, "no command"),
        ({}, "no command"),
        ({"command": "reboot"}, "not allow-listed"),
        ({"command": ["uptime"]}, "short string"),
        ({"command": "uptime", "params": []}, "must be an object"),
        ({"command": "uptime", "params": {"x": 1}}, "has no parameter"),
        ({"command": "tail", "params": {"lines": 20}}, "needs parameter name"),
        ({"command": "tail", "params": {"lines": "20", "name": "a"}}, "must be an integer"),
        ({"command": "tail", "params": {"lines": True, "name": "a"}}, "must be an integer"),
        ({"command": "tail", "params": {"lines": 0, "name": "a"}}, "out of range"),
        ({"command": "tail", "params": {"lines": 1, "name": "../etc/passwd"}}, "does not match"),
        ({"command": "tail", "params": {"lines": 1, "name": "syslog; id"}}, "does not match"),
        ({"command": "tail", "params": {"lines": 1, "name": 7}}, "must be a string"),
        ({"command": "echo", "params": {"text": "x" * 2000}}, "too long"),
        ({"command": "say", "params": {"text": "-n"}}, "begins with '-' and would be read as an option"),
        ({"command": "say", "params": {"text": "--help"}}, "would be read as an option"),
        ({"command": "grep", "params": {"expr": "x", "file": "-r"}}, "would be read as an option"),
        ({"command": "offset", "params": {"n": -1}}, "would be read as an option"),
    ],
)
def test_requests_outside_the_allow_list_are_invalid_messages(payload, why):
    with pytest.raises(InvalidMessage) as info:
        request_of(COMMANDS, payload)
    assert why in info.value.reason


@pytest.mark.parametrize(
    ("allow", "why"),
    [
        ("[]", "JSON object"),
        ("{", "not JSON"),
        ({"bad name": {"argv": ["x"]}}, "names are"),
        ({"x": {"argv": []}}, "argv must be"),
        ({"x": {"argv": ["{p}"], "params": {"p": {"pattern": "a"}}}}, "argv[0]"),
        ({"x": {"argv": ["echo", "{p}"]}}, "undeclared ['p']"),
        ({"x": {"argv": ["echo"], "params": {"p": {"pattern": "a"}}}}, "unused ['p']"),
        ({"x": {"argv": ["echo", "{p}"], "params": {"p": {}}}}, "needs a pattern"),
        ({"x": {"argv": ["echo", "{p}"], "params": {"p": {"pattern": "("}}}}, "bad pattern"),
        ({"x": {"argv": ["echo", "{p}"], "params": {"p": {"type": "float"}}}}, "type must be"),
        ({"x": {"argv": ["echo", "{p!r}"], "params": {"p": {"pattern": "a"}}}}, "plain parameter"),
        ({"x": {"argv": ["echo", "{p"], "params": {}}}, "bad template"),
        ({"x": {"argv": ["echo"], "retry_exit_codes": [0]}}, "retry_exit_codes"),
        ({"x": {"argv": ["echo"], "shell": True}}, "unknown keys"),
        ({"x": {"argv": ["echo", "{p}"], "params": {"p": {"pattern": "a", "allow_leading_dash": 1}}}}, "true or false"),
    ],
)
def test_a_bad_allow_list_is_a_config_error_naming_the_entry(allow, why):
    with pytest.raises(ConfigError) as info:
        parse_allow_list(allow if isinstance(allow, str) else json.dumps(allow))
    assert why in str(info.value)


def test_load_allow_list_reads_the_file(tmp_path):
    path = tmp_path / "commands.json"
    path.write_text(json.dumps(ALLOW), encoding="utf-8")
    assert set(load_allow_list(str(path))) == set(ALLOW)
    with pytest.raises(ConfigError, match="cannot read"):
        load_allow_list(str(tmp_path / "missing.json"))
