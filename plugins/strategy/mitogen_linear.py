"""Ansible's linear strategy run through Mitogen for Ansible (PyPI `mitogen`, pinned in requirements.txt).

Mitogen keeps one Python interpreter per host (over the same SSH connection) and runs every task's module
in it, instead of copying and starting a new Python for each module. ansible.cfg and Molecule's base config
select this strategy; `ANSIBLE_STRATEGY=linear` runs a playbook without it.

Mitogen ships its strategies inside its package; this file makes the installed one findable through
ansible.cfg's relative `strategy_plugins`, whatever the virtualenv's path.
"""

import ansible_mitogen.loaders  # first: it checks the ansible-core version Mitogen supports
import ansible_mitogen.strategy

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[misc,valid-type]
    """The linear strategy with Mitogen's connection handling."""
