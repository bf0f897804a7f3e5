"""The science core never imports the streaming stack (faust, aiokafka, redis); production
code (streams, agents) never imports the test harness."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

FORBIDDEN = {"faust", "aiokafka", "kafka", "redis", "mode"}


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_sources_do_not_import_streaming_packages():
    offenders = {
        str(path.relative_to(REPO)): sorted(_imported_modules(path) & FORBIDDEN)
        for path in (REPO / "calibstream").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"the core imports streaming packages: {offenders}"


def test_importing_every_core_module_loads_no_streaming_package():
    code = (
        "import importlib, pkgutil, sys, calibstream\n"
        "for m in pkgutil.walk_packages(calibstream.__path__, 'calibstream.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"loaded: {result.stdout.strip()}"


def _harness_imports(path, *, lazy_allowed: bool) -> list[str]:
    """``line: module`` of each import of the ``harness`` package in ``path``; with
    ``lazy_allowed``, those inside a function body do not count."""
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed: set[int] = set()
    if lazy_allowed:
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                allowed.update(id(node) for node in ast.walk(fn) if node is not fn)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [
            f"{node.lineno}: {m}"
            for m in modules
            if m.split(".")[0] == "harness" and id(node) not in allowed
        ]
    return found


def test_production_never_imports_the_harness():
    """The test harness (``harness``: brokers, Redis and workers as subprocesses, the demo) is
    never loaded by production code; only ``calibstream demo`` imports it, lazily, in the CLI."""
    offenders = {}
    for package in ("streams", "agents"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            found = _harness_imports(path, lazy_allowed=rel == "streams/cli.py")
            if found:
                offenders[rel] = found
    assert not offenders, f"production imports the harness: {offenders}"

    code = (
        "import importlib, pkgutil, sys, streams, agents\n"
        "def fail(name):\n"
        "    raise  # a package that does not import is an error, not a module skipped\n"
        "for package in (streams, agents):\n"
        "    prefix = package.__name__ + '.'\n"
        "    for m in pkgutil.walk_packages(package.__path__, prefix, onerror=fail):\n"
        "        importlib.import_module(m.name)\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] == 'harness')\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing streams and agents loaded: {result.stdout}"
