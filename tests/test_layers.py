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


PACKAGES = ("calibstream", "streams", "agents", "harness")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def test_modules_and_functions_stay_short():
    """No module over 400 lines, no function over 60 (def line to last line)."""
    long_modules, long_functions = [], []
    for path in _sources():
        text = path.read_text()
        name = str(path.relative_to(REPO))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append((name, node.name, lines))
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path, known: set[str]) -> set[str]:
    """The project's modules ``path`` imports at run time: at its top or lazily, in a
    function body (a lazy import closes a circle all the same once the function runs), but
    not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_import_circle():
    modules = {_module_name(path): path for path in _sources()}
    graph = {name: _runtime_imports(path, set(modules)) - {name} for name, path in modules.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for child in sorted(graph[name]):
            if state.get(child) == 1:
                circles.append([*trail[trail.index(child) :], child])
            elif child not in state:
                visit(child, [*trail, child])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, f"import circles: {circles}"


def test_batch_command_path_loads_no_streaming_package():
    """``calibstream calibrate`` (streams.cli → streams.batch) imports neither faust nor the
    Kafka and Redis clients: a fresh process pays only for the science stack (issue 17)."""
    code = (
        "import sys, streams.cli, streams.batch, streams.readmodel\n"
        f"bad = {sorted(FORBIDDEN | {'aiohttp'})!r}\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"loaded: {result.stdout.strip()}"
