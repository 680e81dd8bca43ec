"""Import contracts (DESIGN 3): the core is sans-I/O; only the runtime, the gateway
(HTTP server actors) and ops (operator tools on top of the runtime) import ray."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pmmc_ray"
CORE_FORBIDDEN = {
    "ray",
    "asyncio",
    "threading",
    "time",
    "random",
    "socket",
    "os",
    "io",
    "pathlib",
    "sqlite3",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "select",
    "datetime",
    "uuid",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        f"{'.' * node.level}{node.module or ''}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }


def test_core_imports_no_io_clock_or_randomness():
    offenders = {
        str(p.relative_to(PKG)): sorted(imported_modules(p) & CORE_FORBIDDEN)
        for p in (PKG / "core").rglob("*.py")
        if imported_modules(p) & CORE_FORBIDDEN
    }
    assert offenders == {}


def test_core_depends_only_on_itself_and_the_app_interface():
    for p in (PKG / "core").rglob("*.py"):
        for rel in relative_imports(p):
            assert rel.startswith(".") and not rel.startswith("..") or rel == "..app.base", (p, rel)


def test_only_the_runtime_gateway_and_ops_import_ray():
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if "ray" in imported_modules(p)
        and p.relative_to(PKG).parts[0] not in ("runtime", "gateway", "ops")
    ]
    assert offenders == []


def test_the_contract_test_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom random import random\nfrom ray.util import x\n")
    assert imported_modules(bad) >= {"time", "random", "ray"}
