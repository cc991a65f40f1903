"""The kernel must stay pure: no I/O, clocks or randomness, by import or by call."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lash.kernel

KERNEL = Path(lash.kernel.__file__).parent

FORBIDDEN_MODULES = {
    "asyncio", "concurrent", "datetime", "http", "httpx", "io", "logging", "multiprocessing",
    "os", "pathlib", "random", "secrets", "select", "selectors", "shutil", "signal", "socket",
    "sqlite3", "ssl", "subprocess", "sys", "tempfile", "threading", "time", "urllib", "uuid",
    "zoneinfo", "psycopg", "anyio", "trio", "requests", "aiohttp",
}  # fmt: skip
ALLOWED_THIRD_PARTY = {
    "msgspec", "pydantic", "pydantic_core", "typing_extensions",
    "jsonschema", "jsonschema_specifications", "referencing",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}
STDLIB = set(sys.stdlib_module_names)


def kernel_sources() -> list[Path]:
    files = sorted(KERNEL.rglob("*.py"))
    assert len(files) > 10
    return files


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.append((node.lineno, node.module.split(".")[0]))
    return roots


@pytest.mark.parametrize("path", kernel_sources(), ids=lambda p: str(p.relative_to(KERNEL)))
def test_kernel_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for line, root in imported_roots(tree):
        if root in FORBIDDEN_MODULES:
            problems.append(f"line {line}: imports {root}")
        elif root not in STDLIB and root not in ALLOWED_THIRD_PARTY and root != "lash":
            problems.append(f"line {line}: imports third-party {root}")
        elif root == "lash":
            problems.append(f"line {line}: absolute import of lash (use relative kernel imports)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            # A relative import must not climb out of lash.kernel.
            depth = len(path.relative_to(KERNEL).parts) - 1
            if node.level > depth + 1:
                problems.append(f"line {node.lineno}: relative import leaves lash.kernel")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            problems.append(f"line {node.lineno}: calls {node.func.id}()")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_importing_the_kernel_loads_no_io_runtime() -> None:
    code = (
        "import sys, pkgutil, importlib, lash.kernel as k\n"
        "for m in pkgutil.walk_packages(k.__path__, 'lash.kernel.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = {'asyncio', 'socket', 'ssl', 'sqlite3', 'httpx', 'subprocess', 'random',\n"
        "       'secrets', 'threading', 'lash.runtime'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_the_purity_check_catches_a_forbidden_import() -> None:
    tree = ast.parse("import time\nfrom os import path\nimport msgspec\n")
    assert [root for _, root in imported_roots(tree)] == ["time", "os", "msgspec"]
