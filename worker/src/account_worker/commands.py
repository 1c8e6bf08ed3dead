"""The allow-list of remote commands: parsing, validation and quoting.  Pure (no SSH here).

The allow-list is a JSON object read from WORKER_SSH_COMMANDS: command name ->
{"argv": [...], "params": {...}, "retry_exit_codes": [...]}.  Each argv element is a
literal or a template with `{param}` placeholders; each parameter is typed ("str" with a
mandatory `pattern` matched in full, or "int" with optional `min`/`max`).  A value that
would make an argv element begin with "-" is refused unless its parameter says
`"allow_leading_dash": true`: the remote program would read the element as an option
(CWE-88, argument injection), which no quoting prevents.  A job names a command and its parameters in its payload:

    {"command": "disk_usage", "params": {"path": "/srv/app"}}

The remote command line is the argv with every element passed through shlex.quote
after substitution: a parameter is always one word for the remote shell, whatever it
contains, and the message text never reaches the shell unquoted.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from account_worker.errors import ConfigError, InvalidMessage

MAX_COMMAND_NAME_LENGTH = 64
MAX_PARAM_LENGTH = 1024
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Param:
    """One typed parameter: str values must fullmatch `pattern`; int values lie in [minimum, maximum].
    `allow_leading_dash`: the value may begin an argv element with "-" (see Command.render)."""

    name: str
    type: str
    pattern: re.Pattern[str] | None = None
    minimum: int | None = None
    maximum: int | None = None
    allow_leading_dash: bool = False

    def check(self, value: object) -> str:
        """The value as text for the argv, or InvalidMessage saying why it is refused."""
        if self.type == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidMessage(f"parameter {self.name} must be an integer")
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise InvalidMessage(f"parameter {self.name} is out of range")
            return str(value)
        if not isinstance(value, str):
            raise InvalidMessage(f"parameter {self.name} must be a string")
        if len(value) > MAX_PARAM_LENGTH or "\x00" in value:
            raise InvalidMessage(f"parameter {self.name} is too long or contains NUL")
        assert self.pattern is not None  # _param guarantees it for "str"
        if not self.pattern.fullmatch(value):
            raise InvalidMessage(f"parameter {self.name} does not match its pattern")
        return value


@dataclass(frozen=True)
class Command:
    """An allow-listed command: its argv template, parameters and the exit codes worth a retry."""

    name: str
    argv: tuple[str, ...]
    params: Mapping[str, Param] = field(default_factory=dict)
    retry_exit_codes: frozenset[int] = frozenset()

    def render(self, values: Mapping[str, object]) -> str:
        """The remote command line for these parameter values: every element shell-quoted."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise InvalidMessage(f"command {self.name} has no parameter {unknown[0][:64]!r}")
        checked: dict[str, str] = {}
        for name, param in self.params.items():
            if name not in values:
                raise InvalidMessage(f"command {self.name} needs parameter {name}")
            checked[name] = param.check(values[name])
        words = []
        for element in self.argv:
            word = element.format_map(checked)
            if word.startswith("-") and not element.startswith("-"):
                # The "-" came from a parameter: the program would read the word as an option (CWE-88).
                names = sorted(_placeholders(self.name, element))
                if not all(self.params[n].allow_leading_dash for n in names):
                    raise InvalidMessage(f"parameter {names[0]} begins with '-' and would be read as an option")
            words.append(shlex.quote(word))
        return " ".join(words)


@dataclass(frozen=True)
class Request:
    """What a job asks for: the command and its remote command line."""

    command: Command
    line: str


AllowList = Mapping[str, Command]


def request_of(allow_list: AllowList, payload: Mapping[str, Any] | None) -> Request:
    """Resolve a job's payload against the allow-list; InvalidMessage if it is not allowed."""
    if not payload or "command" not in payload:
        raise InvalidMessage("payload has no command")
    name = payload["command"]
    if not isinstance(name, str) or len(name) > MAX_COMMAND_NAME_LENGTH:
        raise InvalidMessage("payload command must be a short string")
    command = allow_list.get(name)
    if command is None:
        raise InvalidMessage(f"command {name!r} is not allow-listed")
    params = payload.get("params", {})
    if not isinstance(params, Mapping):
        raise InvalidMessage("payload params must be an object")
    return Request(command, command.render(params))


# ---------------------------------------------------------------------------- parsing the file


def _fail(where: str, what: str) -> ConfigError:
    return ConfigError(f"allow-list: {where}: {what}")


def _placeholders(where: str, element: str) -> set[str]:
    names: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(element))
    except ValueError as exc:
        raise _fail(where, f"bad template {element!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise _fail(where, f"placeholder {{{name}}} must be a plain parameter name")
        names.add(name)
    return names


def _int_or_none(where: str, spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, f"{key} must be an integer")
    return value


def _param(where: str, name: str, spec: object) -> Param:
    if not isinstance(spec, Mapping):
        raise _fail(where, "must be an object")
    unknown = set(spec) - {"type", "pattern", "min", "max", "allow_leading_dash"}
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}")
    kind = spec.get("type", "str")
    dash = spec.get("allow_leading_dash", False)
    if not isinstance(dash, bool):
        raise _fail(where, "allow_leading_dash must be true or false")
    if kind == "int":
        minimum, maximum = _int_or_none(where, spec, "min"), _int_or_none(where, spec, "max")
        return Param(name, "int", minimum=minimum, maximum=maximum, allow_leading_dash=dash)
    if kind != "str":
        raise _fail(where, f"type must be str or int, got {kind!r}")
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, "a str parameter needs a pattern")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise _fail(where, f"bad pattern: {exc}") from None
    return Param(name, "str", pattern=compiled, allow_leading_dash=dash)


def _command(name: str, spec: object) -> Command:
    where = f"command {name!r}"
    if not _NAME.fullmatch(name):
        raise _fail(where, "names are letters, digits, _ . - (up to 64, a letter first)")
    if not isinstance(spec, Mapping):
        raise _fail(where, "must be an object")
    unknown = set(spec) - {"argv", "params", "retry_exit_codes"}
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}")
    argv = spec.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise _fail(where, "argv must be a non-empty list of non-empty strings")
    if _placeholders(where, argv[0]):
        raise _fail(where, "the program (argv[0]) cannot be a parameter")
    raw_params = spec.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise _fail(where, "params must be an object")
    params = {p: _param(f"{where} parameter {p!r}", p, s) for p, s in raw_params.items()}
    used = set().union(*(_placeholders(where, a) for a in argv))
    if used != set(params):
        missing, unused = sorted(used - set(params)), sorted(set(params) - used)
        raise _fail(where, f"placeholders and params differ (undeclared {missing}, unused {unused})")
    codes = spec.get("retry_exit_codes", [])
    if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in codes):
        raise _fail(where, "retry_exit_codes must be a list of positive integers")
    return Command(name, tuple(argv), params, frozenset(codes))


def parse_allow_list(text: str) -> dict[str, Command]:
    """Parse the allow-list JSON; ConfigError naming the offending entry."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"allow-list is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("allow-list must be a JSON object: command name -> definition")
    return {name: _command(name, spec) for name, spec in data.items()}


def load_allow_list(path: str) -> dict[str, Command]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the allow-list {path}: {exc.strerror}") from None
    return parse_allow_list(text)
