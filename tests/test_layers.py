"""The package's layers run one way, and the CLI stays light.

* No import cycle among kiosk modules (function-level imports count).
* click is imported only under ``kiosk/cli/``: the library never imports the CLI.
* ``kiosk --help`` and every ``kiosk CMD --help`` load none of sqlite_utils, requests,
  gpiozero or pyserial; ``kiosk status`` loads neither requests nor gpiozero.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fill_sample_db

PACKAGE = Path(__file__).resolve().parent.parent / "kiosk"
HEAVY = ("sqlite_utils", "requests", "gpiozero", "serial")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth of the file (relative ones resolved)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def owner(n: str) -> str | None:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        return n or None

    graph: dict[str, set[str]] = {}
    for m, f in mods.items():
        targets = {owner(n) for n in _imports(m, f) if n.startswith("kiosk")}
        # a module importing its own package (kiosk.cli.x -> kiosk.cli) is not an edge back
        graph[m] = {t for t in targets if t and t != m and not m.startswith(t + ".")}
    return graph


def test_graph_sees_function_level_imports():
    # the check itself must be able to fail: kiosk.cli imports its command modules in a function
    assert "kiosk.cli.counting" in _graph()["kiosk.cli"]


def test_no_import_cycles():
    graph = _graph()
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > start:  # each cycle once, from its smallest module
                walk(start, nxt, [*path, nxt])

    for m in sorted(graph):
        walk(m, m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:10])


def test_click_only_under_cli():
    users = sorted(m for m, f in _modules().items()
                   if not _in_cli(m)
                   and any(n == "click" or n.startswith("click.") for n in _imports(m, f)))
    assert users == []


def _in_cli(module: str) -> bool:
    """``kiosk.cli`` and its modules, and ``python -m kiosk`` (``kiosk.__main__``), its alias."""
    return module in ("kiosk.cli", "kiosk.__main__") or module.startswith("kiosk.cli.")


def test_library_never_imports_the_cli():
    users = sorted(m for m, f in _modules().items()
                   if not _in_cli(m)
                   and any(n == "kiosk.cli" or n.startswith("kiosk.cli.") for n in _imports(m, f)))
    assert users == []


def _loaded_after(argv: list[str], tmp_path: Path) -> set[str]:
    """Top-level modules loaded by running ``kiosk ARGV`` in a fresh interpreter."""
    code = (
        "import sys, json\n"
        "from kiosk.cli import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def _commands() -> list[str]:
    from kiosk.cli import cli

    return sorted(cli.commands)


def test_help_loads_no_heavy_library(tmp_path):
    loaded = _loaded_after(["--help"], tmp_path)
    assert "click" in loaded  # the probe works
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("command", _commands())
def test_command_help_loads_no_heavy_library(command, tmp_path):
    loaded = _loaded_after([command, "--help"], tmp_path)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_status_loads_neither_requests_nor_gpiozero(tmp_path):
    db = fill_sample_db(tmp_path / "counts.db", 1_764_000_000.0)
    loaded = _loaded_after(["status", "--db", str(db)], tmp_path)
    assert "sqlite_utils" in loaded  # it did read the database
    assert not loaded & {"requests", "gpiozero"}, sorted(loaded & {"requests", "gpiozero"})
