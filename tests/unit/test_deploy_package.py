"""The deployable package: what `.funcignore` leaves in, and whether `requirements.txt` covers what that code imports.

`.funcignore` is read with gitignore rules for patterns without an inner slash (a name or glob matched at any
depth, a trailing slash for directories only), the only kind it uses - the first test holds it to that.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.metadata as metadata
import re
import sys
from functools import cache
from pathlib import Path

from infrastructure.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED_TOP_LEVEL = {
    "function_app.py", "host.json", "requirements.txt", "config", "core", "jobs", "infrastructure", "services",
    "triggers", "sample_data",
}
LOCAL_ONLY = {"pgserver", "psutil"}
"""Distributions of the laptop runtime: never deployed, imported (if at all) only inside a function."""


def _patterns() -> list[str]:
    lines = (line.strip() for line in (ROOT / ".funcignore").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(path: Path) -> bool:
    for pattern in _patterns():
        directory_only = pattern.endswith("/")
        name = pattern.rstrip("/")
        if directory_only and not path.is_dir():
            continue
        if fnmatch.fnmatchcase(path.name, name):
            return True
    return False


def _deployed(directory: Path = ROOT) -> list[Path]:
    files: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if _ignored(entry):
            continue
        files.extend(_deployed(entry) if entry.is_dir() else [entry])
    return files


def test_funcignore_uses_only_patterns_the_simple_rules_cover() -> None:
    for pattern in _patterns():
        assert "/" not in pattern.rstrip("/"), f"{pattern!r}: an inner slash needs full gitignore rules"
        assert not pattern.startswith("!"), f"{pattern!r}: negation is not modelled here"


def test_the_package_holds_the_app_and_nothing_of_the_laptop() -> None:
    deployed = {path.relative_to(ROOT) for path in _deployed()}
    top = {path.parts[0] for path in deployed}
    assert top == DEPLOYED_TOP_LEVEL
    assert not [path for path in deployed if "__pycache__" in path.parts or path.suffix == ".pyc"]
    sql = {path.relative_to(ROOT) for path in (ROOT / "infrastructure").rglob("*.sql")}
    assert sql and sql <= deployed, "the SQL files ship with the code that loads them"
    assert Path("config/data_sources.yml") in deployed


def test_every_module_the_app_loads_is_deployed() -> None:
    import function_app  # noqa: F401  (what the host imports to index the functions)
    from triggers.runtime import load_registries

    load_registries(_settings())
    ours = {path for path in map(_module_path, list(sys.modules.values())) if path is not None}
    deployed = {path.resolve() for path in _deployed()}
    missing = sorted(str(path.relative_to(ROOT)) for path in ours - deployed)
    assert ours and not missing, f"imported but left out of the package: {missing}"


def _module_path(module: object) -> Path | None:
    """The file of one of the project's own modules (not the tests' or the benchmark's, which other tests import
    into the same process, not an installed package's), else None."""
    file = getattr(module, "__file__", None)
    if not file or not Path(file).resolve().is_relative_to(ROOT):
        return None
    path = Path(file).resolve()
    first = path.relative_to(ROOT).parts[0]
    return None if first.startswith(".") or first in ("tests", "bench") else path


def _settings() -> Settings:
    return Settings.for_tests()


def _requirements(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([^;\s]+)", line)
        assert match, f"{name}: {line!r} is not pinned with =="
        pins[_canonical(match.group(1))] = match.group(3)
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: set[str]) -> set[str]:
    """`roots` and everything they require (installed here, markers for this interpreter)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or []:
            if "extra ==" in requirement:
                continue
            spec, _, marker = requirement.partition(";")
            if marker and not _marker_holds(marker):
                continue
            pending.append(_canonical(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]))
    return seen


def _marker_holds(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker).evaluate()


@cache
def _distribution_files() -> dict[Path, str]:
    owner: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.suffix == ".py":
                owner[Path(str(dist.locate_file(file))).resolve()] = _canonical(dist.metadata["Name"])
    return owner


def _distribution_of(module_name: str) -> str | None:
    """The installed distribution providing `module_name`, or None for the standard library and our own code."""
    if module_name.split(".")[0] in sys.stdlib_module_names:
        return None
    module = importlib.import_module(module_name)
    if _module_path(module) is not None:
        return None
    file = getattr(module, "__file__", None)
    return _distribution_files().get(Path(file).resolve()) if file else None


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every absolute import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top_level))
    return found


def test_requirements_txt_is_pinned_and_has_nothing_local_only() -> None:
    deployed = _requirements("requirements.txt")
    assert not LOCAL_ONLY & set(deployed)
    assert set(_requirements("requirements-local.txt")) >= LOCAL_ONLY


def test_requirements_txt_covers_every_import_of_the_deployed_code() -> None:
    available = _closure(set(_requirements("requirements.txt")))
    unmet: list[str] = []
    for path in _deployed():
        if path.suffix != ".py":
            continue
        for module, at_top in _imports(path):
            dist = _distribution_of(module)
            if dist is None or dist in available:
                continue
            if dist in LOCAL_ONLY and not at_top:
                continue  # the embedded server's lazy import, never reached on Azure
            unmet.append(f"{path.relative_to(ROOT)}: {module} ({dist})")
    assert not unmet, "imports requirements.txt does not provide:\n" + "\n".join(unmet)
