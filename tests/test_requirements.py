"""`make run` and a production install get requirements.txt only (the tests' extra packages are not there):
every package careid's own code imports must come with it, directly or as a dependency of what it lists."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "audit", "authenticators", "careid", "demo_ers", "oidc", "signin")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions requirements.txt brings, with their own dependencies (and the extras asked for)."""
    seen: set[str] = set()
    pending = [(requirement, frozenset(requirement.extras)) for requirement in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = _canonical(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(requirement.name) or []:
            dependency = Requirement(text)
            marker: Marker | None = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in (extras or {""})):
                pending.append((dependency, frozenset(dependency.extras)))
    return seen


def _imported_packages() -> set[str]:
    """The top-level modules careid's own code (not its tests or benchmarks) imports."""
    names: set[str] = set()
    for path in [ROOT / "manage.py", *(file for app in APPS for file in (ROOT / app).rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in APPS}


def test_every_package_careid_imports_comes_with_requirements_txt():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = [Requirement(line) for line in (line.split("#")[0].strip() for line in lines) if line]
    installed = _installed_closure(listed)
    providers = metadata.packages_distributions()
    missing = {name: providers.get(name, ["(not installed)"]) for name in _imported_packages()
               if not any(_canonical(dist) in installed for dist in providers.get(name, []))}
    assert not missing, f"imported but not brought by requirements.txt: {missing}"
