"""Ansible's linear strategy run through Mitogen for Ansible (PyPI `mitogen`, pinned in requirements.txt).

Mitogen keeps one Python interpreter per host (over the same SSH connection) and runs every task's module
in it, instead of copying and starting a new Python for each module. ansible.cfg and Molecule's base config
select this strategy; `ANSIBLE_STRATEGY=linear` runs a playbook without it.

Mitogen ships its strategies inside its package; this file makes the installed one findable through
ansible.cfg's relative `strategy_plugins`, whatever the virtualenv's path.

It also turns Mitogen's CPU pinning off. Mitogen pins its connection multiplexer to the first CPU and
the playbook's own process and its workers to the others, and every process they start inherits that
mask. On a controller with fewer than four CPUs this leaves exactly one CPU for everything but the
multiplexer: on this project's two-core test machine, `molecule create` and `playbooks/sandbox.yml`
started the containers (RabbitMQ, PostgreSQL and the workers inside them) and every pytest suite a
verify runs pinned to one core (`taskset -p` showed mask 0x2), so every scenario ran on half the machine.
The no-op policy leaves scheduling to the kernel, as Ansible's own strategies do.

And it lists the installed collections once per run. For every task whose module comes from a collection,
Mitogen lists every collection directory (reading each collection's metadata) to tell the host where
to import from, and keeps the answer in the worker process, which Ansible forks anew for each task: the
`ansible` package's 94 collections were listed again for each such task, about 1.8 s of a 22 s
re-run of site.yml on the sandbox. The list is now made in the playbook's own process, before the
workers are forked, and every worker inherits it.
"""

import functools
from typing import Any

import ansible.collections.list
import ansible_mitogen.affinity
import ansible_mitogen.loaders  # before .strategy: it checks the ansible-core version Mitogen supports
import ansible_mitogen.planner
import ansible_mitogen.strategy

ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()


@functools.cache
def collection_dirs() -> tuple[str, ...]:
    """The installed collections' directories, listed as Mitogen's planner lists them."""
    return tuple(path.decode("utf-8") for path in ansible.collections.list.list_collection_dirs())


def load_collections(invocation: Any) -> None:
    """Mitogen's planner._load_collections (the host may import from these directories), listed once."""
    invocation._extra_sys_paths.update(collection_dirs())


ansible_mitogen.planner._load_collections = load_collections

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[misc,valid-type]
    """The linear strategy with Mitogen's connection handling."""

    def run(self, iterator: Any, play_context: Any) -> Any:
        collection_dirs()  # in the playbook's process, so that every forked worker has the list
        return super().run(iterator, play_context)
