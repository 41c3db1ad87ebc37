"""Workers: the parent that speaks the worker protocol, its engine child, and launchers.

``run_worker(cfg)`` runs one worker in this process (``cinecloud worker``);
``LocalLauncher`` runs several as OS processes (``cinecloud serve --workers N``);
``RayLauncher`` runs them as actors on a Ray cluster (the ``ray`` extra).
"""

from cinecloud.workers.launcher import LocalLauncher
from cinecloud.workers.parent import run_worker
from cinecloud.workers.ray_launcher import RayLauncher, RayPool

__all__ = ["LocalLauncher", "RayLauncher", "RayPool", "run_worker"]
