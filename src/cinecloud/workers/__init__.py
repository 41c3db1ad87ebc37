"""Workers: the parent that speaks the worker protocol, its engine child, and launchers.

``run_worker(cfg)`` runs one worker in this process (``cinecloud worker``);
``LocalLauncher`` runs several as OS processes (``cinecloud serve --workers N``).
"""

from cinecloud.workers.launcher import LocalLauncher
from cinecloud.workers.parent import run_worker

__all__ = ["LocalLauncher", "run_worker"]
