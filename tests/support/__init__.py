"""Helpers shared by the live suites (tests/worker_faults, tests/cluster) and bench/.

Importable as `support` (each suite's pytest.ini puts tests/ on the path; the
benchmark adds it itself). tests/smoke never imports it: that suite runs against
any broker with nothing but its own dependencies.
"""
