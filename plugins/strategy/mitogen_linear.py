"""Ansible's linear strategy run through Mitogen for Ansible (PyPI `mitogen`, pinned in requirements.txt).

ansible.cfg names this directory in `strategy_plugins` and this strategy in `strategy`; Mitogen keeps one
Python interpreter per host for the whole run instead of starting one per task. The module only puts
Mitogen's own strategy under a path relative to the project, so that no configuration names a
site-packages directory. Back to Ansible's own: `ANSIBLE_STRATEGY=linear`.
"""

import ansible_mitogen.loaders
import ansible_mitogen.strategy

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    pass
