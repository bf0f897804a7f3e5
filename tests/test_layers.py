"""The science core never imports the streaming stack (faust, aiokafka, redis)."""

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
