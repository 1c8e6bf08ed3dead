#!/usr/bin/python
"""Converge runit service directories with an svlogd log service, linked and started, in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: runit_services
short_description: Converge runit services (run script, svlogd log service, link, started) in one call
description:
  - For each service, makes C(<sv_dir>/<name>/run) and C(<sv_dir>/<name>/log/run) hold the given scripts
    (root, 0755), makes the log directory C(<log_root>/<name>) (log_owner:log_group, 0750) with svlogd's
    C(config) (root:log_group, 0644), links C(<service_dir>/<name>) to the service directory, waits until
    runsv supervises a newly linked service and its log, and starts a service that is not running.
  - Files are written atomically and only when they differ. Nothing is restarted here; the caller restarts
    what it needs from the returned lists (handlers).
options:
  services:
    type: list
    elements: dict
    required: true
    description: "Each: name, run (script), log_run (script), log_config (svlogd config)."
  sv_dir: {type: path, default: /etc/sv, description: Where the service directories live.}
  service_dir: {type: path, default: /etc/service, description: The directory runsvdir scans.}
  log_root: {type: path, default: /var/log, description: Parent of each service's log directory.}
  log_owner: {type: str, required: true, description: User svlogd runs as (owns the log directory).}
  log_group: {type: str, required: true, description: Its group.}
  wait_timeout: {type: int, default: 30, description: Seconds to wait for runsv to pick up a new link.}
  extra_pattern:
    type: str
    description: Regex; linked services matching it that are not in services are returned in C(extra).
author: Bundle maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Supervise two worker instances, each with its svlogd log service
  bundle.ops.runit_services:
    services:
      - name: account-worker-1
        run: "#!/bin/sh\nexec chpst -u worker -e /etc/worker/env /opt/worker/bin/account-worker\n"
        log_run: "#!/bin/sh\nexec chpst -u workerlog svlogd -tt /var/log/account-worker-1\n"
        log_config: "s10485760\nn10\n"
      - name: account-worker-2
        run: "#!/bin/sh\nexec chpst -u worker -e /etc/worker/env /opt/worker/bin/account-worker\n"
        log_run: "#!/bin/sh\nexec chpst -u workerlog svlogd -tt /var/log/account-worker-2\n"
        log_config: "s10485760\nn10\n"
    log_owner: workerlog
    log_group: workerlog
    extra_pattern: "^account-worker-[0-9]+$"
  register: worker_runit
"""

RETURN = r"""
linked: {description: Services linked now (runsv started them with the new files)., type: list, returned: always}
run_changed: {description: Services whose run script was written., type: list, returned: always}
log_run_changed: {description: Services whose log/run script was written., type: list, returned: always}
log_config_changed: {description: Services whose svlogd config was written., type: list, returned: always}
started: {description: Services found not running and started., type: list, returned: always}
extra: {description: Linked services matching extra_pattern that were not asked for., type: list, returned: always}
"""

import grp
import os
import pwd
import re
import subprocess
import time
from dataclasses import dataclass, field

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bundle.ops.plugins.module_utils.managed_files import ensure_dir, ensure_file

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Owner and group of the service directories and scripts.
ROOT = (0, 0)
SV = "/usr/bin/sv"  # runit on Debian


@dataclass
class Outcome:
    """Names of the services each kind of change touched."""

    linked: list[str] = field(default_factory=list)
    run_changed: list[str] = field(default_factory=list)
    log_run_changed: list[str] = field(default_factory=list)
    log_config_changed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    other: bool = False  # a directory created or an owner/mode fixed

    @property
    def changed(self) -> bool:
        return self.other or any(
            (self.linked, self.run_changed, self.log_run_changed, self.log_config_changed, self.started)
        )

    def result(self) -> dict:
        """The lists returned to the play (and on failure, what was done so far)."""
        return {key: value for key, value in self.__dict__.items() if key != "other"}


def invalid(services: list[dict]) -> list[str]:
    """Sentences describing each malformed service entry."""
    problems = []
    names = [s.get("name") for s in services]
    for index, service in enumerate(services):
        name = service.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"services[{index}].name {name!r} is not a service name")
        for key in ("run", "log_run"):
            if not isinstance(service.get(key), str) or not service[key].startswith("#!"):
                problems.append(f"services[{index}].{key} must be a script starting with #!")
    duplicates = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicates:
        problems.append(f"service names listed twice: {', '.join(duplicates)}")
    return problems


def ensure_link(link: str, target: str, check: bool) -> bool:
    """Point link at target; True when it was missing or pointed elsewhere."""
    if os.path.islink(link) and os.readlink(link) == target:
        return False
    if check:
        return True
    if os.path.lexists(link):
        if os.path.isdir(link) and not os.path.islink(link):
            raise OSError(f"{link} is a directory, not a link")
        os.unlink(link)
    os.symlink(target, link)
    return True


def supervised(directory: str) -> bool:
    """True once runsv has opened the directory's supervise/ok."""
    return os.path.exists(os.path.join(directory, "supervise", "ok"))


def running(directory: str) -> bool:
    """True when runsv reports the service (not its log) as running."""
    try:
        with open(os.path.join(directory, "supervise", "stat"), encoding="ascii") as handle:
            return handle.read().strip() == "run"
    except OSError:
        return False


def linked_extra(service_dir: str, pattern: str, wanted: set[str]) -> list[str]:
    """Links in service_dir matching pattern that are not wanted."""
    regex = re.compile(pattern)
    return sorted(
        entry
        for entry in os.listdir(service_dir)
        if regex.match(entry) and entry not in wanted and os.path.islink(os.path.join(service_dir, entry))
    )


def converge(module: AnsibleModule, params: dict) -> Outcome:
    check = module.check_mode
    outcome = Outcome()
    log_uid = pwd.getpwnam(params["log_owner"]).pw_uid
    log_gid = grp.getgrnam(params["log_group"]).gr_gid
    for service in params["services"]:
        name = service["name"]
        sv = os.path.join(params["sv_dir"], name)
        logs = os.path.join(params["log_root"], name)
        outcome.other |= ensure_dir(sv, *ROOT, 0o755, check)
        outcome.other |= ensure_dir(os.path.join(sv, "log"), *ROOT, 0o755, check)
        outcome.other |= ensure_dir(logs, log_uid, log_gid, 0o750, check)
        if check and not os.path.isdir(sv):
            outcome.run_changed.append(name)
            outcome.log_run_changed.append(name)
            outcome.linked.append(name)
            continue
        if ensure_file(os.path.join(sv, "run"), service["run"], uid=ROOT[0], gid=ROOT[1], mode=0o755, check=check):
            outcome.run_changed.append(name)
        if ensure_file(
            os.path.join(sv, "log", "run"), service["log_run"], uid=ROOT[0], gid=ROOT[1], mode=0o755, check=check
        ):
            outcome.log_run_changed.append(name)
        if (
            service.get("log_config") is not None
            and os.path.isdir(logs)
            and ensure_file(
                os.path.join(logs, "config"), service["log_config"], uid=ROOT[0], gid=log_gid, mode=0o644, check=check
            )
        ):
            outcome.log_config_changed.append(name)
        if ensure_link(os.path.join(params["service_dir"], name), sv, check):
            outcome.linked.append(name)

    if not check:
        deadline = time.monotonic() + params["wait_timeout"]
        for name in outcome.linked:
            sv = os.path.join(params["sv_dir"], name)
            while not (supervised(sv) and supervised(os.path.join(sv, "log"))):
                if time.monotonic() > deadline:
                    module.fail_json(
                        msg=f"runsv did not pick up {name} within {params['wait_timeout']} s: "
                        f"is runsvdir scanning {params['service_dir']}?",
                        **outcome.result(),
                    )
                time.sleep(0.2)
        for service in params["services"]:
            sv = os.path.join(params["sv_dir"], service["name"])
            if running(sv) or os.path.exists(os.path.join(sv, "down")):
                continue
            result = subprocess.run([SV, "start", sv], capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
            if result.returncode != 0:
                module.fail_json(
                    msg=f"sv start {service['name']} failed: {(result.stdout + result.stderr).strip()}",
                    **outcome.result(),
                )
            outcome.started.append(service["name"])
    if params.get("extra_pattern") and os.path.isdir(params["service_dir"]):
        outcome.extra = linked_extra(
            params["service_dir"], params["extra_pattern"], {s["name"] for s in params["services"]}
        )
    return outcome


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "services": {"type": "list", "elements": "dict", "required": True},
            "sv_dir": {"type": "path", "default": "/etc/sv"},
            "service_dir": {"type": "path", "default": "/etc/service"},
            "log_root": {"type": "path", "default": "/var/log"},
            "log_owner": {"type": "str", "required": True},
            "log_group": {"type": "str", "required": True},
            "wait_timeout": {"type": "int", "default": 30},
            "extra_pattern": {"type": "str"},
        },
        supports_check_mode=True,
    )
    problems = invalid(module.params["services"])
    if problems:
        module.fail_json(msg="runit_services: " + "; ".join(problems) + ".")
    try:
        outcome = converge(module, module.params)
    except KeyError as exc:
        module.fail_json(msg=f"runit_services: no such user or group: {exc.args[0]}")
    except OSError as exc:
        module.fail_json(msg=f"runit_services: {exc}")
    module.exit_json(changed=outcome.changed, **outcome.result())


if __name__ == "__main__":
    main()
