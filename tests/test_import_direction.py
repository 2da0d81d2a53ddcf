"""Imports point one way: the client (``magics``) depends only on the API (and ``common``), the service never on
the hub extension, ``common`` on no other part, and the quota book not on the policy (their shared types are in
``policy_types``, which imports nothing of the platform).  Read from the source with ``ast``, so an import
inside a function or under ``TYPE_CHECKING`` counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("scheduler", "magics", "hub_extension", "spawner", "common")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["nothing", *parts])


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute names (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # ``from . import spec``
    return found


def modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in modules(folder):
        hits = sorted(m for m in imported(path) if m.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(REPO))] = hits
    return bad


def test_relative_imports_are_resolved_as_python_does():
    names = imported(REPO / "scheduler" / "api" / "base.py")
    assert "nothing.scheduler.auth" in names
    assert "nothing.common.spec" in imported(REPO / "magics" / "options.py")


@pytest.mark.parametrize("folder, forbidden", [
    ("magics", ("nothing.scheduler", "nothing.hub_extension", "nothing.spawner")),
    ("scheduler", ("nothing.hub_extension", "nothing.magics", "nothing.spawner")),
    ("common", ("nothing.scheduler", "nothing.magics", "nothing.hub_extension", "nothing.spawner")),
])
def test_a_part_never_imports_the_parts_it_must_ship_without(folder, forbidden):
    assert offenders(folder, forbidden) == {}


def test_the_quota_book_does_not_import_the_policy():
    quotas = imported(REPO / "scheduler" / "quotas.py")
    assert not {m for m in quotas if m == "nothing.scheduler.policy" or m.startswith("nothing.scheduler.policy.")}
    assert "nothing.scheduler.policy_types" in quotas


def test_the_policys_value_types_import_nothing_of_the_platform():
    assert not [m for m in imported(REPO / "scheduler" / "policy_types.py") if m.startswith("nothing")]
