"""The house rules, checked on the source: imports run one way between rooms, no module reaches
another's private names, files stay readable, and every room says what it holds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# bottom to top: a module may import from its own room and from rooms earlier in this list
ROOMS = ["data", "models", "bohb_search.scoring", "bohb_search.evaluate", "bohb_search.train", "bohb_search.tune",
         "bohb_search.experiments", "bohb_search.top", "bohb_search.cli"]
TOP_FILES = {"bohb_search.final", "bohb_search.quickstart", "bohb_search"}
PACKAGES = ("data", "models", "bohb_search")
MAX_LINES = 520  # "about 500"; data/synth/ (the signal models) is exempt


def _modules():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _room(module: str) -> str:
    if module == "bohb_search.__main__":
        return "bohb_search.cli"
    if module in TOP_FILES:
        return "bohb_search.top"
    for room in sorted(ROOMS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    raise AssertionError(f"{module} is in no room")


def _imports(module: str, path: Path):
    """(imported module, names, line) of every import statement, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def _own(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def test_imports_run_one_way_between_rooms():
    bad = []
    for module, path in _modules():
        here = ROOMS.index(_room(module))
        for target, names, line in _imports(module, path):
            if not _own(target):
                continue
            candidates = [target] + [f"{target}.{n}" for n in names]
            # "from bohb_search.train import runs" names a module; judge by the deepest that exists
            room = ROOMS.index(_room(max((c for c in candidates if _exists(c)), key=len, default=target)))
            if room > here:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target} ({ROOMS[room]} is above {ROOMS[here]})")
    assert not bad, "\n".join(bad)


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file()


def test_no_module_imports_another_modules_private_names():
    bad = []
    for module, path in _modules():
        for target, names, line in _imports(module, path):
            if _own(target):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {', '.join(private)} from {target}")
    for path in sorted((REPO / "bench").glob("*.py")) + sorted((REPO / "tests").glob("*.py")):
        for target, names, line in _imports("bench.x", path):
            if _own(target) and any(n.startswith("_") and not n.startswith("__") for n in names):
                bad.append(f"{path.relative_to(REPO)}:{line} imports a private name from {target}")
    assert not bad, "\n".join(bad)


def test_files_stay_readable():
    long = [f"{path.relative_to(REPO)}: {n} lines" for _, path in _modules()
            if "synth" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("room", [r for r in ROOMS if r.startswith("bohb_search.") and r != "bohb_search.top"])
def test_every_room_says_what_it_holds(room):
    init = REPO / Path(*room.split(".")) / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{init} has no docstring"
    assert 1 <= len(doc.strip().splitlines()) <= 3, f"{init}: say what the room holds in about two lines"


def test_readme_architecture_shows_every_room():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    for room in ROOMS:
        if room.startswith("bohb_search.") and room != "bohb_search.top":
            assert f"{room.split('.')[1]}/" in section, f"README architecture section does not show {room}"
