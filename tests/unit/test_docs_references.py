"""The documents name only what exists: every relative link (and its #anchor) of README.md, docs/, bench/ and
the roles', worker's and suites' READMEs resolves, every repository path written in backticks exists, every
role-prefixed name they write in backticks (a variable, a fact, a module) still occurs in the code, and every table
has as many cells in each row as in its header and ends before the prose after it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        ROOT / "worker" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "roles").glob("*/README.md"),
        *(ROOT / "tests").glob("*/README.md"),
        *(ROOT / "collections").glob("ansible_collections/*/*/README.md"),
    ]
)
TOP = ("playbooks/", "roles/", "tests/", "molecule/", "bench/", "scripts/", "inventory/", "worker/", "docs/",
       "collections/", "containers/", ".config/")  # fmt: skip
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())  # GitHub's: punctuation out, _ and - kept
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


def _code_words() -> set[str]:
    """Every identifier of the code (roles, collection, playbooks, inventories, molecule, bench, tests)."""
    words: set[str] = set()
    for top in ("roles", "collections", "playbooks", "inventory", "molecule", "bench", "tests", "worker/src"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in (".yml", ".yaml", ".j2", ".py", ".cfg", ".conf"):
                words |= set(re.findall(r"[a-z][a-z0-9_]+", path.read_text(encoding="utf-8", errors="replace")))
    return words


def _prose(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_in_backticks_exists(doc: Path) -> None:
    missing = []
    for written in CODE.findall(_prose(doc)):
        token = written.rstrip(".,:;")
        if not token.startswith(TOP) or re.search(r"[<>*{}$]|\.\.\.", token):
            continue
        path = token.split("::")[0]
        if not (ROOT / path).exists() and not (doc.parent / path).exists():
            missing.append(token)
    # A file table's first column (`name.py`, `defaults/main.yml`) names a file under the document's folder.
    for name in re.findall(r"^\| `([\w./-]+\.(?:py|yml|yaml|toml|ini|cfg|md|j2|sh|json))` ", _prose(doc), re.M):
        found = (ROOT / name).exists() or (doc.parent / name).exists() if "/" in name else any(doc.parent.rglob(name))
        if not found:
            missing.append(name)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_role_prefixed_name_still_occurs_in_the_code(doc: Path) -> None:
    prefixes = tuple(f"{role.name}_" for role in (ROOT / "roles").iterdir() if role.is_dir())
    words = WORDS
    gone = set()
    for token in CODE.findall(_prose(doc)):
        name = re.split(r"[=:\[.(]", token, maxsplit=1)[0]
        if re.fullmatch(r"[a-z][a-z0-9_]+", name) and name.startswith(prefixes) and name not in words:
            gone.add(name)
    assert not gone, f"{doc.relative_to(ROOT)} names what the code no longer has: {sorted(gone)}"


def _cells(row: str) -> int:
    """Cells of a table row; a pipe inside a code span or escaped does not split."""
    row = re.sub(r"`[^`]*`", "x", row.strip()).replace("\\|", "x")
    return len(row.strip("|").split("|"))


def table_faults(text: str) -> list[str]:
    """Rows whose cell count differs from their table's header, and prose glued to a table's last row (which
    the renderer takes for one more row)."""
    lines = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text).split("\n")
    faults = []
    number = 0
    while number < len(lines) - 1:
        if not (lines[number].startswith("|") and re.fullmatch(r"\|[\s:|-]+\|", lines[number + 1].strip())):
            number += 1
            continue
        header = _cells(lines[number])
        number += 2
        while number < len(lines) and lines[number].startswith("|"):
            if _cells(lines[number]) != header:
                faults.append(f"line {number + 1}: {_cells(lines[number])} cells, the header has {header}")
            number += 1
        if number < len(lines) and lines[number].strip():
            faults.append(f"line {number + 1}: no blank line between the table and {lines[number][:40]!r}")
    return faults


def test_table_faults_finds_a_short_row_and_glued_prose() -> None:
    good = "| a | b |\n|---|---:|\n| `x | y` | 2 |\n\nprose\n"
    assert table_faults(good) == []
    assert table_faults("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n") == ["line 3: 3 cells, the header has 2"]
    assert table_faults("| a | b |\n|---|---|\n| 1 | 2 |\nprose\n") == [
        "line 4: no blank line between the table and 'prose'"
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_is_well_formed(doc: Path) -> None:
    faults = table_faults(doc.read_text(encoding="utf-8"))
    assert not faults, f"{doc.relative_to(ROOT)}: {faults}"


WORDS = _code_words()
