"""``python -m cinecloud.workers``: run one worker (what ``LocalLauncher`` starts).

Settings come from the environment and config file as usual (``CINECLOUD_WORKER__*``);
the flags below override them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from cinecloud.config import Config, load_config
from cinecloud.workers.parent import run_worker

__all__ = ["build_config", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cinecloud.workers", description=__doc__)
    p.add_argument("--server", help="control plane URL (worker.server_url)")
    p.add_argument("--token", help="worker token (prefer CINECLOUD_WORKER__TOKEN)")
    p.add_argument("--name", help="worker name shown by the control plane")
    p.add_argument("--models", help="comma-separated model ids to load")
    p.add_argument("--runner-factory", help="'module:callable' building the runner")
    p.add_argument("--work-dir", type=Path, help="where jobs' files are rendered")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def build_config(args: argparse.Namespace) -> Config:
    worker: dict[str, Any] = {}
    for flag, key in (
        ("server", "server_url"),
        ("token", "token"),
        ("name", "name"),
        ("runner_factory", "runner_factory"),
        ("work_dir", "work_dir"),
    ):
        value = getattr(args, flag)
        if value is not None:
            worker[key] = value
    if args.models is not None:
        worker["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if worker:
        return load_config(args.config, worker=worker)
    return load_config(args.config)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # One line per heartbeat (several a second while busy) would drown the worker's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run_worker(build_config(args))


if __name__ == "__main__":
    sys.exit(main())
