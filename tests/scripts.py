"""The repository's scripts and benchmarks, loaded as modules by the tests that drive them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from cinecloud.config import repo_root

__all__ = ["load_script"]


def load_script(path: str) -> ModuleType:
    """``path`` (relative to the repository, e.g. ``scripts/make_tiny_models.py``) as a
    module named after its file."""
    file = repo_root() / path
    spec = importlib.util.spec_from_file_location(Path(path).stem, file)
    assert spec is not None and spec.loader is not None, file
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
