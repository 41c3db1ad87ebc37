"""``cinecloud verify FILE``: the provenance a video carries, and whether it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from cinecloud.config import Config

__all__ = ["print_report", "trust_anchors"]


def trust_anchors(cfg: Config, extra: Path | None) -> str:
    """PEM trust anchors: ``extra``, the configured ones and this home's local test CA."""
    from cinecloud.render.signing import CA_FILE

    paths = [extra, cfg.provenance.trust_anchors, cfg.server.home / "c2pa" / CA_FILE]
    pems = []
    for path in paths:
        if path is None:
            continue
        if not path.is_file():
            if path is extra:
                raise ValueError(f"trust anchors file not found: {path}")
            continue
        pems.append(path.read_text())
    return "".join(pems)


def print_report(console: Console, data: dict[str, Any]) -> None:
    """``data`` (render.verify.report_dict) for a person."""
    c2pa, label, mark = data["c2pa"], data["aigc_label"], data["watermark"]
    console.print(f"[bold]{data['file']}[/]")
    if not c2pa["present"]:
        console.print("C2PA manifest: [red]none[/]")
    else:
        colour = "green" if c2pa["state"] in ("Valid", "Trusted") else "red"
        state = c2pa["state"]
        if state == "Valid":
            state, colour = "Valid (the signer is not trusted here)", "yellow"
        console.print(f"C2PA manifest: [{colour}]{state}[/] signed by {c2pa['signer'] or '?'}")
        if c2pa["failures"]:
            console.print(f"  failures: {', '.join(c2pa['failures'])}")
    if label is None:
        console.print("AIGC label: [yellow]none[/]")
    else:
        console.print(f"AIGC label: {json.dumps(label['AIGC'], ensure_ascii=False)}")
    if mark is None:
        console.print("watermark: no video frames to read")
    elif not mark["found"]:
        console.print(f"watermark: [yellow]none found[/] in {mark['frames']} frames")
    else:
        console.print(
            f"watermark: job {mark['job_id']} "
            f"({mark['frames']} frames, {100 * mark['agreement']:.0f}% agreement)"
        )
    if data["valid"]:
        console.print("[green]provenance valid[/]")
    else:
        console.print(f"[red]no valid provenance:[/] {'; '.join(data['problems'])}")
