"""Each role documents every public variable once: defaults, argument_specs and README agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def _options(role: Path) -> dict[str, dict]:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options", {}))
    return options


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_specs_and_readme_agree(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    options = _options(role)
    readme = (role / "README.md").read_text()
    assert set(defaults) <= set(options), f"defaults without argument_specs: {set(defaults) - set(options)}"
    undocumented = [name for name in options if f"| `{name}` |" not in readme]
    assert not undocumented, f"not in the README's variable table: {undocumented}"
    for name, spec in options.items():
        assert spec.get("description"), f"{name} has no description"
        assert name.startswith(role.name + "_"), f"{name} is not prefixed with the role's name"
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], f"{name}: argument_specs default differs from defaults/main.yml"
    private = [name for name in defaults if name.startswith("_")]
    assert not private, f"private variables belong in vars/, not defaults: {private}"
