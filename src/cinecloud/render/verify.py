"""What a video file says about where it came from (``cinecloud verify``).

:func:`inspect_file` reads the three marks render.trusted puts on a video: the C2PA
manifest, the AIGC label and the watermark. :func:`verdict` is the pure rule over
them: a file has valid provenance when its C2PA manifest validates (and, if asked,
its signer is trusted) and no mark contradicts another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from cinecloud.render.provenance import C2paCheck, read_label, verify_c2pa
from cinecloud.render.watermark import WatermarkReading, decode_watermark, video_luma

__all__ = ["FileReport", "inspect_file", "report_dict", "verdict"]


@dataclass(frozen=True)
class FileReport:
    path: Path
    c2pa: C2paCheck
    label: dict[str, Any] | None
    watermark: WatermarkReading | None  # None: the file has no video frames

    @property
    def label_id(self) -> str | None:
        produce = (self.label or {}).get("AIGC", {}).get("ProduceID")
        return str(produce) if produce else None

    @property
    def manifest_id(self) -> str | None:
        label = self.c2pa.assertions.get("org.cinecloud.aigc") or {}
        produce = label.get("AIGC", {}).get("ProduceID") if isinstance(label, dict) else None
        return str(produce) if produce else None


def inspect_file(path: Path, trust_anchors: str = "", *, max_frames: int = 64) -> FileReport:
    """Read ``path``'s marks; raises ValueError when it is not a readable media file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        mark = decode_watermark(video_luma(path, max_frames=max_frames))
    except av.FFmpegError as exc:
        raise ValueError(f"{path} is not a readable video: {exc}") from None
    watermark = mark if mark.frames else None
    return FileReport(path, verify_c2pa(path, trust_anchors), read_label(path), watermark)


def verdict(report: FileReport, *, require_trust: bool = False) -> tuple[bool, list[str]]:
    """(valid provenance?, why not) for ``report``."""
    problems = []
    check = report.c2pa
    if not check.present:
        problems.append("no C2PA manifest")
    elif not check.valid:
        detail = ", ".join(check.failures) or check.error or "invalid"
        problems.append(f"the C2PA manifest does not validate ({detail})")
    elif require_trust and not check.trusted:
        problems.append("the C2PA signer is not trusted here (pass --trust-anchors)")
    ids = {
        "label": report.label_id,
        "manifest": report.manifest_id,
        "watermark": _watermark_id(report),
    }
    known = {source: value for source, value in ids.items() if value}
    if len(set(known.values())) > 1:
        said = ", ".join(f"{source} says {value}" for source, value in known.items())
        problems.append(f"the marks disagree on the job: {said}")
    return not problems, problems


def _watermark_id(report: FileReport) -> str | None:
    mark = report.watermark
    if mark is None or not mark.found:
        return None
    if mark.job_id is not None:
        return mark.job_id
    # A hashed id: it names the job the label or manifest claims if it matches it.
    for claimed in (report.label_id, report.manifest_id):
        if claimed and mark.matches(claimed):
            return claimed
    return f"hash:{mark.id_hash}"


def report_dict(report: FileReport, *, require_trust: bool = False) -> dict[str, Any]:
    """``report`` and its verdict as plain JSON-able data."""
    ok, problems = verdict(report, require_trust=require_trust)
    check, mark = report.c2pa, report.watermark
    return {
        "file": str(report.path),
        "valid": ok,
        "problems": problems,
        "c2pa": {
            "present": check.present,
            "state": check.state,
            "trusted": check.trusted,
            "signer": check.signer,
            "failures": list(check.failures),
            "job_id": report.manifest_id,
        },
        "aigc_label": report.label,
        "watermark": None
        if mark is None
        else {
            "found": mark.found,
            "job_id": _watermark_id(report) if mark.found else None,
            "frames": mark.frames,
            "agreement": round(mark.agreement, 4),
        },
    }
