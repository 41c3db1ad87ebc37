"""The AIGC label's shape and the verdict ``cinecloud verify`` gives (pure rules)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cinecloud.config import load_config
from cinecloud.render.provenance import C2paCheck, aigc_label, c2pa_manifest, label_metadata
from cinecloud.render.trusted import TrustSettings
from cinecloud.render.verify import FileReport, report_dict, verdict
from cinecloud.render.watermark import WatermarkReading, payload_bits, payload_hex

pytestmark = pytest.mark.unit

JOB = "video_00112233445566778899aabb"
OTHER = "video_ffeeddccbbaa998877665544"


def test_label_follows_the_rules_fields() -> None:
    label = aigc_label("cinecloud/prod", JOB, reserved_code=payload_hex(JOB))
    assert list(label["AIGC"]) == [
        "Label",
        "ContentProducer",
        "ProduceID",
        "ReservedCode1",
        "ContentPropagator",
        "PropagateID",
        "ReservedCode2",
    ]
    assert label["AIGC"]["Label"] == "1" and label["AIGC"]["ContentPropagator"] == "cinecloud/prod"
    tags = label_metadata(label)
    assert set(tags) == {"AIGC", "comment"} and json.loads(tags["AIGC"]) == label
    manifest = c2pa_manifest("video.mp4", label, payload_hex(JOB), "cinecloud/shapes-t2v")
    labels = [a["label"] for a in manifest["assertions"]]
    assert labels == ["c2pa.actions.v2", "org.cinecloud.aigc", "org.cinecloud.watermark"]


def mark(job_id: str | None) -> WatermarkReading:
    if job_id is None:
        return WatermarkReading(16, np.zeros(112, np.uint8), None, None, 0.6)
    return WatermarkReading(16, payload_bits(job_id), job_id, None, 1.0)


def report(
    state: str | None = "Trusted",
    label_id: str | None = JOB,
    manifest_id: str | None = JOB,
    mark_id: str | None = JOB,
) -> FileReport:
    assertions = {"org.cinecloud.aigc": aigc_label("p", manifest_id)} if manifest_id else {}
    check = C2paCheck(present=state is not None, state=state, assertions=assertions)
    label = aigc_label("p", label_id) if label_id else None
    return FileReport(Path("v.mp4"), check, label, mark(mark_id))


@pytest.mark.parametrize(
    ("kwargs", "require_trust", "ok", "why"),
    [
        ({}, False, True, ""),
        ({"state": "Valid"}, False, True, ""),
        ({"state": "Valid"}, True, False, "not trusted"),
        ({"state": "Invalid"}, False, False, "does not validate"),
        ({"state": None, "manifest_id": None}, False, False, "no C2PA manifest"),
        ({"mark_id": None}, False, True, ""),  # no mark found: nothing contradicts
        ({"mark_id": OTHER}, False, False, "disagree"),
        ({"label_id": OTHER}, False, False, "disagree"),
        ({"state": None, "manifest_id": None, "label_id": None}, False, False, "no C2PA"),
    ],
)
def test_verdict(kwargs: dict[str, str | None], require_trust: bool, ok: bool, why: str) -> None:
    valid, problems = verdict(report(**kwargs), require_trust=require_trust)  # type: ignore[arg-type]
    assert valid is ok
    assert why in " ".join(problems)


def test_a_hashed_id_matches_the_job_the_label_names() -> None:
    bits = payload_bits("job-7")
    hashed = WatermarkReading(16, bits, None, "abc", 1.0)
    good = FileReport(Path("v"), C2paCheck(True, "Trusted"), aigc_label("p", "job-7"), hashed)
    assert verdict(good) == (True, [])
    assert report_dict(good)["watermark"]["job_id"] == "job-7"
    bad = FileReport(Path("v"), C2paCheck(True, "Trusted"), aigc_label("p", "job-8"), hashed)
    assert not verdict(bad)[0]


def test_settings_cross_the_process_boundary_as_plain_data(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        server={"home": tmp_path},  # type: ignore[arg-type]
        delivery={"secret": "s"},  # type: ignore[arg-type]
        worker={"server_url": "http://cp.example:8000", "token": "t"},  # type: ignore[arg-type]
        provenance={"caption": True},  # type: ignore[arg-type]
    )
    assert not any(tmp_path.iterdir())  # (no secret was written: no I/O)
    settings = TrustSettings.from_config(cfg)
    assert settings.producer == "cinecloud/cp.example:8000"
    data = json.loads(json.dumps(settings.to_dict()))
    assert TrustSettings.from_dict(data) == settings


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        load_config(
            None,
            server={"home": tmp_path},  # type: ignore[arg-type]
            delivery={"secret": "s"},  # type: ignore[arg-type]
            worker={"token": "t"},  # type: ignore[arg-type]
            provenance={"cert_path": "c.pem"},  # type: ignore[arg-type]
        )
