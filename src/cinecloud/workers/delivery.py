"""Uploading a finished job's files: all of them at once, each to its signed URL.

The files of one job go up in parallel (one request each, on a small thread pool), so a
job's upload costs about one round trip rather than one per file; with short jobs the
last job's upload is part of the wall time nobody can overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cinecloud.workers.client import Artifact, ControlPlaneClient
from cinecloud.workers.messages import OutputFile, RunJob

__all__ = ["UPLOAD_THREADS", "upload_files"]

#: Files of one job uploaded at once: a job has the video, four images and its HLS
#: ladder (a master playlist plus, per rendition, a playlist, an init segment and one
#: media segment per 6 s), so a short clip's files all go up in one round.
UPLOAD_THREADS = 16


def upload_files(
    client: ControlPlaneClient,
    pool: ThreadPoolExecutor,
    job: RunJob,
    files: Sequence[OutputFile],
    stopping: Callable[[], bool],
) -> list[Artifact] | None:
    """Upload ``files`` in parallel; their artifacts in the order given, or None when
    ``stopping`` turned true (nothing more is started then). Protocol errors raise."""
    targets = client.uploads(job.job_id, job.lease_id, [f.name for f in files])
    if stopping():
        return None
    futures = [
        pool.submit(client.put_file, f.name, targets[f.name], Path(f.path), f.content_type)
        for f in files
    ]
    artifacts = [future.result() for future in futures]
    return None if stopping() else artifacts
