"""Another commit's code beside this one, for benchmarks that compare two commits in one
run (each side in processes of its own, ``PYTHONPATH`` pointing at its ``src/``)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

__all__ = ["checkout_src"]


def checkout_src(repo: Path, ref: str, into: Path, links: tuple[str, ...] = ()) -> Path:
    """``ref``'s ``src/`` (of the git checkout ``repo``) unpacked under ``into``; each of
    ``links`` (a top-level path of ``repo``, e.g. ``models``, whose weights the code finds
    beside ``src/``) linked beside it."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    for name in links:
        (into / name).symlink_to(repo / name)
    return into / "src"
