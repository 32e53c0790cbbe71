"""The layers of the project and their one direction of imports (docs/extending.md: "Layout"), read from the
code: the core (``trainclaims/`` but its families) imports neither pytest nor the plugin nor any
family, and reaches the families only through ``trainclaims.registry``; the plugin (``fixtures/``)
is pytest glue that imports no family module; the families import no plugin module; and no module
of the project imports another that imports it back. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.trainclaims

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_MODULES = ("pytest", "_pytest", "xdist", "pluggy", "trainclaims.fixtures")
FAMILIES = "trainclaims.families"
HISTORY = "trainclaims.history"  # a tool on top of the results: nothing below it imports it


def module_name(path: Path) -> str:
    """The module a file of this checkout is imported as (``fixtures/`` is ``trainclaims.fixtures``)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "fixtures":
        parts = ["trainclaims", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source`` (relative ones resolved against
    ``module``), at module level or inside functions; ``from a import b`` counts as ``a`` and ``a.b``."""
    found = []
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def layer(module: str) -> str:
    if module.startswith("trainclaims.fixtures"):
        return "plugin"
    if module.startswith(FAMILIES):
        return "families"
    return "core"


def wrong_way(module: str, imported: str) -> str | None:
    """Why ``module`` must not import ``imported``, or None."""
    where, to = layer(module), imported
    if where == "core" and to.startswith(PLUGIN_MODULES):
        return "the core imports no pytest and no plugin module"
    if where == "core" and to.startswith(FAMILIES):
        return "the core reaches the families only through trainclaims.registry"
    if where == "core" and to.startswith(HISTORY) and not module.startswith(HISTORY):
        return "the history is built on the results and the reports; nothing below it imports it back"
    if where == "plugin" and to.startswith(FAMILIES):
        return "the plugin reaches the families only through trainclaims.registry"
    if where == "families" and to.startswith("trainclaims.fixtures"):
        return "a family imports no plugin module (the hook it answers is the plugin's way in)"
    return None


def violations(files: dict[str, str]) -> list[str]:
    """``module:line imports X: why`` for every import against the layers among ``files``
    ({module name: source}); a module name ending in ``.__init__`` is a package."""
    out = []
    for name, source in files.items():
        module = name.removesuffix(".__init__")
        for line, imported in imports(source, module, name.endswith(".__init__")):
            why = wrong_way(module, imported)
            if why:
                out.append(f"{module}:{line} imports {imported}: {why}")
    return sorted(dict.fromkeys(out))


def cycles(files: dict[str, str]) -> list[list[str]]:
    """The import cycles among ``files``' modules (module-level and function-level imports)."""
    names = {n.removesuffix(".__init__"): n for n in files}
    edges = {
        m: {i for _, i in imports(files[n], m, n.endswith(".__init__")) if i in names and i != m}
        for m, n in names.items()
    }
    found, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                found.append([*stack[stack.index(v) :], v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def project_files() -> dict[str, str]:
    files = {}
    for folder in ("trainclaims", "fixtures"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = module_name(path) + (".__init__" if path.name == "__init__.py" else "")
            files[name] = path.read_text()
    return files


def test_every_import_of_the_library_and_the_plugin_goes_one_way():
    assert violations(project_files()) == []


def test_no_module_of_the_project_imports_one_that_imports_it_back():
    assert cycles(project_files()) == []


# The imports an earlier version made across the layers (main at 685ded5), each in its own module:
# the self-test above must fail on every one of them.
EARLIER = [
    ("trainclaims.models", "def _named():\n    from trainclaims.families.nets import MODELS\n"),
    # the seed engine, core once, imported back from a core module (it lives in families/seed/ now)
    ("trainclaims.step", "from trainclaims.families.seed.engine import TrainConfig\n"),
    ("trainclaims.launch", "def main():\n    from trainclaims.families import s002_ddp\n"),
    ("trainclaims.devices", "import pytest\n"),
    ("trainclaims.checks.base", "from trainclaims.fixtures.keys import EVIDENCE_KEY\n"),
    ("trainclaims.fixtures.session", "from trainclaims.families.s002 import data_parallel\n"),
    ("trainclaims.families.s001", "from trainclaims.fixtures.plugin import activate\n"),
    ("trainclaims.render", "from trainclaims.history.noise import judge\n"),
]


@pytest.mark.parametrize(("module", "source"), EARLIER, ids=[m for m, _ in EARLIER])
def test_the_layer_check_fails_on_each_import_an_earlier_version_made_across_the_layers(module, source):
    files = project_files() | {module: source}
    assert [v for v in violations(files) if v.startswith(f"{module}:")]


def test_the_cycle_check_fails_on_the_plugins_earlier_import_circle():
    """plugin -> fixtures -> session -> fixtures (main at 685ded5: fixtures.py:31, session.py:50)."""
    files = project_files()
    files["trainclaims.fixtures.fixtures"] += "\ndef runner():\n    from .plugin import session_for\n"
    files["trainclaims.fixtures.session"] += "\nfrom . import fixtures as _fixtures\n"
    assert any("trainclaims.fixtures.fixtures" in c for c in cycles(files))


def test_every_package_folder_is_in_the_wheel():
    """pyproject.toml lists the packages a wheel holds by name: a package folder missing from it
    imports from a checkout but not from an installed wheel (the seed engine's folder once did)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(root).parts) for p in (root / "trainclaims").rglob("__init__.py")} | {
        "trainclaims.fixtures"
    }
    assert folders - set(config["packages"]) == set(), "package folders not in [tool.setuptools] packages"
    assert set(config["packages"]) - folders == set(), "packages listed that have no folder"
