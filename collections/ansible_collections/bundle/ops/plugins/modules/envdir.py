#!/usr/bin/python
"""Converge a runit/daemontools envdir: one file per variable, nothing else, in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: envdir
short_description: Converge an envdir (one file per environment variable), as read by chpst -e
description:
  - Makes the directory hold exactly the given variables, one file per variable whose first line is the
    value, with the given owner, group and modes. Files of variables no longer given are removed.
  - Each file is written atomically (temporary file in the same directory, then renamed), and only when
    its content, owner, group or mode differs. The parent directory must exist.
    One module call instead of one task per variable.
  - "Values are secrets (URLs with passwords): they are never returned or logged, only variable names."
options:
  path: {type: path, required: true, description: The envdir.}
  variables:
    type: dict
    required: true
    description: Variable name to value. A value must be one line; an empty value unsets the variable.
  owner: {type: str, default: root, description: Owner of the directory and files.}
  group: {type: str, required: true, description: Group of the directory and files.}
  dir_mode: {type: str, default: "0750", description: Mode of the directory.}
  file_mode: {type: str, default: "0640", description: Mode of each file.}
author: Bundle maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Write the worker's environment (one file per variable, readable by its group)
  bundle.ops.envdir:
    path: /etc/account-worker/env
    variables:
      WORKER_AMQP_URL: "amqps://worker:{{ worker_amqp_password }}@mq1.example.net:5671/app"
      WORKER_QUEUE: jobs
    owner: root
    group: account-worker
  register: worker_env
  no_log: true
"""

RETURN = r"""
written:
  description: Names of the variables whose file was created or rewritten (or would be, in check mode).
  type: list
  elements: str
  returned: always
removed:
  description: Names of the variables whose file was removed.
  type: list
  elements: str
  returned: always
"""

import grp
import os
import pwd
import re
from dataclasses import dataclass, field

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bundle.ops.plugins.module_utils.managed_files import ensure_dir, ensure_file

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Outcome:
    """What converging the envdir changed (or would change)."""

    directory: bool = False
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.directory or bool(self.written) or bool(self.removed)


def invalid(variables: dict[str, object]) -> list[str]:
    """Sentences naming each variable that cannot be an envdir file (never its value)."""
    problems = []
    for name, value in sorted(variables.items()):
        if not NAME.match(name):
            problems.append(f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)")
        elif "\n" in str(value) or "\0" in str(value):
            problems.append(f"the value of {name} spans several lines (an envdir file keeps only its first)")
    return problems


def converge(
    path: str, variables: dict[str, str], *, uid: int, gid: int, dir_mode: int, file_mode: int, check: bool = False
) -> Outcome:
    """Make path an envdir holding exactly variables; return what changed."""
    outcome = Outcome(directory=ensure_dir(path, uid, gid, dir_mode, check))
    outcome.written = [
        name
        for name in sorted(variables)
        if ensure_file(os.path.join(path, name), f"{variables[name]}\n", uid=uid, gid=gid, mode=file_mode, check=check)
    ]
    if not os.path.isdir(path):  # check mode, not created
        return outcome
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry in variables or entry.startswith(".") or not (os.path.isfile(full) or os.path.islink(full)):
            continue
        outcome.removed.append(entry)
        if not check:
            os.unlink(full)
    return outcome


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "variables": {"type": "dict", "required": True, "no_log": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "required": True},
            "dir_mode": {"type": "str", "default": "0750"},
            "file_mode": {"type": "str", "default": "0640"},
        },
        supports_check_mode=True,
    )
    params = module.params
    problems = invalid(params["variables"])
    if problems:
        module.fail_json(msg="envdir " + params["path"] + ": " + "; ".join(problems) + ".")
    try:
        uid = pwd.getpwnam(params["owner"]).pw_uid
        gid = grp.getgrnam(params["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(msg=f"envdir {params['path']}: no such user or group: {exc.args[0]}")
    try:
        dir_mode, file_mode = int(params["dir_mode"], 8), int(params["file_mode"], 8)
    except ValueError:
        module.fail_json(msg='envdir: dir_mode and file_mode must be octal strings such as "0640"')
    variables = {name: str(value) for name, value in params["variables"].items()}
    try:
        outcome = converge(
            params["path"], variables, uid=uid, gid=gid, dir_mode=dir_mode, file_mode=file_mode, check=module.check_mode
        )
    except OSError as exc:
        module.fail_json(msg=f"envdir {params['path']}: {exc.strerror} ({exc.filename})")
    module.exit_json(changed=outcome.changed, written=outcome.written, removed=outcome.removed)


if __name__ == "__main__":
    main()
