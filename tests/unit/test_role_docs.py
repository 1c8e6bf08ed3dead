"""Each role documents every public variable once, in meta/argument_specs.yml: defaults agree with it,
and the README's variable table is the one scripts/role-docs renders from it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def _load_role_docs():
    """scripts/role-docs (a script without .py) as a module, to run its check in-process."""
    loader = importlib.machinery.SourceFileLoader("role_docs", str(ROOT / "scripts" / "role-docs"))
    spec = importlib.util.spec_from_loader("role_docs", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


role_docs = _load_role_docs()


def _options(role: Path) -> dict[str, dict]:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options", {}))
    return options


def _described(spec: dict) -> bool:
    text = spec.get("description")
    paragraphs = [text] if isinstance(text, str) else text or []
    return bool(paragraphs) and all(isinstance(p, str) and p.strip() for p in paragraphs)


def _undescribed_keys(spec: dict, prefix: str) -> list[str]:
    missing = []
    for key, sub in (spec.get("options") or {}).items():
        if not _described(sub):
            missing.append(prefix + key)
        missing += _undescribed_keys(sub, f"{prefix}{key}.")
    return missing


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_specs_and_readme_agree(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    options = _options(role)
    readme = (role / "README.md").read_text()
    assert set(defaults) <= set(options), f"defaults without argument_specs: {set(defaults) - set(options)}"
    undocumented = [name for name in options if f"| `{name}` |" not in readme]
    assert not undocumented, f"not in the README's variable table: {undocumented}"
    for name, spec in options.items():
        assert _described(spec), f"{name} has no description"
        assert not _undescribed_keys(spec, f"{name}."), f"keys without a description: {_undescribed_keys(spec, '')}"
        assert name.startswith(role.name + "_"), f"{name} is not prefixed with the role's name"
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], f"{name}: argument_specs default differs from defaults/main.yml"
        elif name in defaults and spec.get("options"):
            # A dict whose defaults are its keys' (monitoring_rules): each key documented with the value
            # defaults/main.yml gives it, no key more or less.
            keys = {key: sub.get("default") for key, sub in spec["options"].items()}
            assert defaults[name] == keys, f"{name}: its keys' argument_specs defaults differ from defaults/main.yml"
    private = [name for name in defaults if name.startswith("_")]
    assert not private, f"private variables belong in vars/, not defaults: {private}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_comments_are_one_line_at_most(role: Path) -> None:
    """The explanation lives in the argument specs: one comment line at most in a row, besides a
    section header (`# ---- name --`) and a required variable's placeholder (`# name: required`)."""
    run = 0
    for number, line in enumerate((role / "defaults/main.yml").read_text().splitlines(), 1):
        text = line.strip()
        if not text.startswith("#") or re.match(rf"#\s*{role.name}_\w+:", text):
            run = 0
        elif not text.startswith("# --"):
            run += 1
        assert run <= 1, f"defaults/main.yml:{number}: more than one comment line in a row"


def test_every_readme_table_is_rendered_from_the_argument_specs() -> None:
    stale = [str(path.relative_to(ROOT)) for path in role_docs.stale()]
    fix = ".venv/bin/python scripts/role-docs"
    assert not stale, f"README variable tables differ from meta/argument_specs.yml, run {fix}: {stale}"


def test_the_check_names_a_stale_readme(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "roles" / "runit", tmp_path / "runit")
    shutil.copytree(ROOT / "roles" / "erlang", tmp_path / "erlang")
    assert role_docs.stale(tmp_path) == []
    readme = tmp_path / "runit" / "README.md"
    readme.write_text(
        readme.read_text().replace("| `runit_start_timeout` | `30` |", "| `runit_start_timeout` | `60` |")
    )
    assert role_docs.stale(tmp_path) == [readme]
    assert role_docs.write(tmp_path) == [readme]
    assert role_docs.stale(tmp_path) == []
    readme.write_text(readme.read_text().replace(role_docs.END, ""))
    assert role_docs.stale(tmp_path) == [readme]  # markers missing


def test_a_shared_option_is_listed_once_and_suboptions_all_appear(tmp_path: Path) -> None:
    role = tmp_path / "demo"
    (role / "meta").mkdir(parents=True)
    option = {
        "type": "list",
        "elements": "dict",
        "default": [],
        "description": "Things | with C(code) and O(demo_other).",
        "options": {
            "name": {"type": "str", "required": True, "description": "Name."},
            "parts": {
                "type": "list",
                "elements": "dict",
                "description": "Parts.",
                "options": {"size": {"type": "int", "default": 3, "description": "Size."}},
            },
        },
    }
    specs = {
        "argument_specs": {"main": {"options": {"demo_things": option}}, "other": {"options": {"demo_things": option}}}
    }
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    block = role_docs.render(role)
    assert block.count("| `demo_things` |") == 1
    assert "Things \\| with `code` and `demo_other`." in block
    assert "| `name` | str | **required** | Name. |" in block
    assert "| `parts[].size` | int | `3` | Size. |" in block
    specs["argument_specs"]["other"]["options"]["demo_things"] = {**option, "description": "Another text."}
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    with pytest.raises(role_docs.SpecError, match="described differently"):
        role_docs.render(role)


@pytest.mark.parametrize(
    ("default", "cell"),
    [
        ("", '`""`'),
        ("text", "`text`"),
        (0, "`0`"),
        (False, "`false`"),
        ([], "`[]`"),
        ({}, "`{}`"),
        (["a", "b"], "`[a, b]`"),
    ],
)
def test_defaults_render_as_their_values(default: object, cell: str) -> None:
    assert role_docs.value(default) == cell
