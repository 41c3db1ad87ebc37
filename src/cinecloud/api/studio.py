"""The web studio: static files from ``cinecloud/web`` under ``/studio/``.

Nothing is built at run time: the pages are plain HTML, CSS and JavaScript modules,
with hls.js and uPlot vendored under ``web/vendor`` (see its README).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["WEB_DIR", "install_studio"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def install_studio(app: FastAPI) -> None:
    """Serve the studio at ``/studio/`` and send ``/`` there."""
    app.mount("/studio", StaticFiles(directory=WEB_DIR, html=True), name="studio")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/studio/", status_code=307)
