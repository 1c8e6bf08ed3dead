"""Helpers shared by the live suites (tests/worker_faults, tests/production_cluster) and bench/.

Importable as `support`: `make venv` installs it into the repository's virtualenv
(editable, tests/support/pyproject.toml), so neither the suites nor bench/ touch sys.path.
tests/smoke never imports it: that suite runs against any broker with nothing but
its own dependencies.
"""
