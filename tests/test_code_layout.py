"""Layout rules a maintainer relies on: the core and the CLI import no QGIS/Qt, the plugin entry is thin."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "sip")
# Heavy model libraries live in the worker; the QGIS side must not import them.
MODEL_LIBRARIES = ("torch", "sentence_transformers", "llama_cpp", "transformers", "huggingface_hub", "httpx2")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_cli_worker_and_bootstrap_import_no_qgis_or_qt():
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_modules(path) & set(FORBIDDEN))
        for folder in ("plugin/core", "plugin/cli", "plugin/worker", "plugin/bootstrap")
    for path in (REPO / folder).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_qgis_side_imports_no_model_library():
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_modules(path) & set(MODEL_LIBRARIES))
        for path in (REPO / "plugin" / "qgis").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_plugin_entry_holds_only_class_factory():
    tree = ast.parse((REPO / "__init__.py").read_text(encoding="utf-8"))
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert functions == ["classFactory"] and not imports  # importing the package loads nothing


def local_imports(path: Path) -> set[Path]:
    """Files of this repository that `path` imports with relative imports, at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split(".")) if node.module else base
            candidates = [target.with_suffix(".py"), target / "__init__.py"]
            candidates += [target / f"{alias.name}.py" for alias in node.names]
            found.update(c.resolve() for c in candidates if c.is_file())
    return found


def test_no_import_cycles_between_modules():
    graph = {path.resolve(): local_imports(path) for path in (REPO / "plugin").rglob("*.py")}
    cycles = []

    def visit(node, trail):
        for child in graph.get(node, ()):
            if child in trail:
                cycles.append([p.name for p in trail[trail.index(child):]] + [child.name])
            elif child not in done:
                visit(child, trail + [child])
        done.add(node)

    done: set = set()
    for start in graph:
        if start not in done:
            visit(start, [start])
    assert not [c for c in cycles if "__init__.py" not in c], cycles


def test_ui_files_wire_nothing_and_take_qgis_widgets_from_qgis_gui():
    """As Lizmap's: signals are connected in Python, where they can be read and tested; a custom
    widget's header is `qgis.gui` (a `qgs*.h` header only resolves through QGIS's uic plugin)."""
    import xml.etree.ElementTree as ET

    problems = []
    for path in sorted((REPO / "ui").glob("*.ui")):
        root = ET.parse(path).getroot()
        if root.findall("./connections/connection"):
            problems.append(f"{path.name}: <connections> in the .ui file")
        for widget in root.findall("./customwidgets/customwidget"):
            if widget.findtext("header") != "qgis.gui":
                problems.append(f"{path.name}: {widget.findtext('class')} from {widget.findtext('header')}")
    assert problems == []


def test_core_reports_through_logging_not_stderr_prints():
    """One logging style in the core: `logging`, never print(..., file=sys.stderr) or traceback,
    except in a command-line `main()` (tools like tiny_gguf print their usage and results)."""
    offenders = []
    for path in (REPO / "plugin" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mains = {id(node) for func in ast.walk(tree) if isinstance(func, ast.FunctionDef) and func.name == "main"
                 for node in ast.walk(func)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and "traceback" in (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]):
                offenders.append(f"{path.name}: imports traceback")
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print"
                    and any(k.arg == "file" for k in node.keywords) and id(node) not in mains):
                offenders.append(f"{path.name}:{node.lineno}: print to a file")
    assert offenders == []


# Which rooms each room may import (besides itself): the architecture, lowest first. An import
# that runs back up (core -> cli/qgis/worker, index -> search, bootstrap -> qgis) fails below.
# `core` is the root modules (errors, captions, embedding); `core.X` a subpackage.
ALLOWED_IMPORTS = {
    "core": set(),
    "core.raster": {"core"},
    "core.captioning": {"core", "core.raster"},
    "core.models": {"core", "core.captioning"},
    "core.index": {"core", "core.raster"},
    "core.search": {"core", "core.raster", "core.index"},
    "core.indexing": {"core", "core.raster", "core.captioning", "core.index"},
    "core.evaluation": {"core", "core.raster", "core.captioning", "core.index", "core.search", "core.indexing"},
    "worker": {"core", "core.raster", "core.captioning", "core.models", "core.index", "core.search",
               "core.indexing"},
    "cli": {"core", "core.raster", "core.captioning", "core.models", "core.index", "core.search",
            "core.indexing", "core.evaluation"},  # devtools' bench commands: by name, only when present
    "bootstrap": {"worker"},  # the worker client, to prove an environment; never qgis
    "qgis": {"core", "core.captioning", "core.models", "core.indexing", "worker", "bootstrap"},
    "plugin": {"qgis"},  # plugin/__init__.py
    "devtools": {"core", "core.raster", "core.captioning", "core.models", "core.index", "core.search",
                 "core.indexing", "core.evaluation", "cli"},
}


def room_of(path: Path) -> str:
    """`core.index` for plugin/core/index/store.py, `qgis` for plugin/qgis/dock.py, `devtools`..."""
    parts = path.resolve().relative_to(REPO).parts
    if parts[0] == "devtools":
        return "devtools"
    if len(parts) == 2:
        return "plugin"
    if parts[1] == "core":
        return "core" if len(parts) == 3 else f"core.{parts[2]}"
    return parts[1]


def imported_files(path: Path) -> set[Path]:
    """Files of this repository that `path` imports, relatively or as `tilescribe.…`, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*node.module.split(".")) if node.module else base
        elif node.module and node.module.startswith("tilescribe."):
            target = REPO.joinpath(*node.module.split(".")[1:])
        else:
            continue
        candidates = [target.with_suffix(".py"), target / "__init__.py"]
        candidates += [target / f"{alias.name}.py" for alias in node.names]
        found.update(c.resolve() for c in candidates if c.is_file())
    return found


def shipped_and_dev_files() -> list[Path]:
    return sorted((REPO / "plugin").rglob("*.py")) + sorted((REPO / "devtools").rglob("*.py"))


def test_every_package_has_an_import_rule():
    rooms = {room_of(path) for path in shipped_and_dev_files()}
    assert rooms - set(ALLOWED_IMPORTS) == set(), "a new package needs its line in ALLOWED_IMPORTS"


def test_no_import_runs_back_up_the_layers():
    offenders = []
    for path in shipped_and_dev_files():
        source = room_of(path)
        for target in imported_files(path):
            if room_of(target) not in ALLOWED_IMPORTS[source] | {source}:
                offenders.append(f"{path.relative_to(REPO)} ({source}) imports "
                                 f"{target.relative_to(REPO)} ({room_of(target)})")
    assert offenders == []


def test_the_rules_catch_an_import_that_runs_back_up():
    """The check itself: bootstrap importing the QGIS side, or the index importing search, is caught."""
    assert "qgis" not in ALLOWED_IMPORTS["bootstrap"] and "core.search" not in ALLOWED_IMPORTS["core.index"]
    assert room_of(REPO / "plugin" / "bootstrap" / "verify.py") == "bootstrap"
    assert room_of(REPO / "plugin" / "core" / "index" / "store.py") == "core.index"
    assert room_of(REPO / "plugin" / "core" / "errors.py") == "core"
    assert all(room not in ALLOWED_IMPORTS[low] for low in ("core", "core.raster", "core.index")
               for room in ("cli", "qgis", "worker", "bootstrap", "devtools"))


def test_nothing_shipped_imports_devtools():
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "plugin").rglob("*.py")
                 if any(room_of(target) == "devtools" for target in imported_files(path))]
    assert offenders == []


def test_worker_client_needs_only_the_standard_library():
    """QGIS's own Python and bootstrap/verify.py import it: no numpy, no model library, no Qt."""
    client = REPO / "plugin" / "worker" / "client.py"
    third_party = imported_modules(client) - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == set()
    assert {p.relative_to(REPO).as_posix() for p in imported_files(client)} == {"plugin/core/errors.py"}
    assert imported_modules(REPO / "plugin" / "core" / "errors.py") <= set(sys.stdlib_module_names) | {"__future__"}


INDEX_PRIVATE = {"store_reads.py", "store_writes.py", "store_queries.py", "connection.py"}


def test_only_the_index_package_touches_a_connection():
    """The index is a boundary: outside plugin/core/index nothing reads a connection or the SQL helpers;
    the Store runs every query (health.py, the auditor, is inside)."""
    index = REPO / "plugin" / "core" / "index"
    offenders = []
    for path in shipped_and_dev_files():
        if index in path.resolve().parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr in ("conn", "_conn")]
        offenders += [f"{path.relative_to(REPO)} imports {target.name}" for target in imported_files(path)
                      if target.parent == index and target.name in INDEX_PRIVATE]
    assert offenders == []
