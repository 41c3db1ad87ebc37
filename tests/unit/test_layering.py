"""Dependencies point down the module table: lower layers never import upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "cinecloud"

# module -> the cinecloud packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "storage": {"config"},
    "render": {"config"},
    "delivery": {"storage", "config"},
    "telemetry": {"config"},
    # webhook targets, signing and sending; the messages live in jobs
    "webhooks": {"config", "telemetry"},
    "engine": {"config", "telemetry"},
    "jobs": {"config", "telemetry"},
    "scheduler": {"jobs", "telemetry", "config"},
    "workers": {"engine", "render", "storage", "telemetry", "config"},
    # the API validates requests against the model registry (engine.registry only)
    "api": {
        "jobs",
        "scheduler",
        "storage",
        "delivery",
        "telemetry",
        "config",
        "engine",
        "webhooks",
    },
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cinecloud" and len(parts) > 1:
                found.add(".".join(parts[1:3]))
    return found


def _module_files(module: str) -> list[Path]:
    single = PKG / f"{module}.py"
    return [single] if single.exists() else sorted((PKG / module).rglob("*.py"))


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_down(module: str) -> None:
    bad = []
    for path in _module_files(module):
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top == module or top in ALLOWED[module]:
                continue
            bad.append(f"{path.relative_to(PKG)} imports cinecloud.{imported}")
    assert not bad, "\n".join(bad)


def test_api_uses_only_the_registry_of_the_engine() -> None:
    for path in _module_files("api"):
        engine = {i for i in _imports(path) if i.startswith("engine")}
        assert engine <= {"engine.registry"}, f"{path.name} imports {engine}"
