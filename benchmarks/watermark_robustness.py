"""Provenance on real outputs: the watermark after re-encodes, the C2PA checks, the cost.

Clips of two kinds go through the real render (render.trusted: QC, watermark, AIGC
label, C2PA on the MP4 and the HLS init segments):

- ``shapes``: cinecloud/shapes-t2v outputs (16 frames at 64x64, delivered at 256x256),
  one per evaluation prompt, with the model's default steps and guidance;
- ``procedural``: the shapes renderer's ground-truth scenes (textured grass and brick,
  gradients, hard edges) at 832x480, 33 frames.

Each delivered MP4 is then attacked (decoded and re-encoded with PyAV's H.264 at the
given size and CRF) and its watermark read back: the share of the 112 payload bits
right, and whether the whole job id came back. The C2PA rows say what a validator
(c2pa-python, this run's test CA as trust anchor) makes of the MP4, of each HLS init
segment alone, of the init segment with its first media segment, and of an MP4 with
one byte changed. The cost rows time the render with provenance on and off.

    python benchmarks/watermark_robustness.py --shapes 24 --procedural 6 \
        --clips benchmarks/results/shapes_clips.npz

Prints tables and writes ``benchmarks/results/watermark_robustness.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ATTACKS: dict[str, tuple[float, int]] = {  # name: (scale, crf)
    "delivered": (1.0, 0),
    "crf28": (1.0, 28),
    "half": (0.5, 18),
    "half+crf28": (0.5, 28),
    "crf35": (1.0, 35),
    "quarter": (0.25, 18),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shapes", type=int, default=16, help="shapes-t2v clips")
    p.add_argument("--procedural", type=int, default=6, help="832x480 procedural clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=Path, default=None, help="shapes clips .npz (kept, reused)")
    p.add_argument("--json", type=Path, default=RESULTS / "watermark_robustness.json")
    return p.parse_args(argv)


# ---------------------------------------------------------------- sources


def shapes_clips(n: int, device: str, seed: int) -> list[tuple[str, np.ndarray]]:
    from cinecloud.config import EngineConfig
    from cinecloud.engine.registry import default_registry
    from cinecloud.engine.runner import Runner
    from cinecloud.engine.shapes.dataset import eval_prompts

    spec = default_registry(EngineConfig()).get("cinecloud/shapes-t2v")
    runner = Runner(spec, device=device)
    runner.load()
    clips = []
    for index, (prompt, _) in enumerate(eval_prompts("seen", n, seed)):
        params = spec.default_params(prompt, seed=seed + index)
        clips.append((prompt, runner.run(params, lambda _: None, lambda: False).frames))
    return clips


def procedural_clips(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    import torch

    from cinecloud.engine.shapes.dataset import render, sample_scenes

    # a "still" ground-truth scene is the same frame repeated: the gate fails it as frozen
    pool = sample_scenes(4 * n, torch.Generator().manual_seed(seed))
    scenes = [s for s in pool if s.motion != "still"][:n]
    clips = []
    for scene in scenes:  # one at a time: 832x832x33 floats is 270 MB
        video = render([scene], frames=33, size=832)[0, :, :, 176:656, :]  # (T, 3, 480, 832)
        frames = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        clips.append((" ".join(scene.combo), frames))
    return clips


def cached(
    path: Path | None, make: Callable[[], list[tuple[str, np.ndarray]]]
) -> list[tuple[str, np.ndarray]]:
    """``make()``'s clips, kept in (or read back from) the ``.npz`` at ``path``."""
    if path is not None and path.is_file():
        with np.load(path) as data:
            count = len(data.files) // 2
            return [(str(data[f"prompt_{i}"]), data[f"clip_{i}"]) for i in range(count)]
    clips = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"clip_{i}": c for i, (_, c) in enumerate(clips)}
        arrays.update({f"prompt_{i}": np.array(p) for i, (p, _) in enumerate(clips)})
        np.savez(path, **arrays)
    return clips


# ---------------------------------------------------------------- measures


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def attack(src: Path, dst: Path, scale: float, crf: int, fps: int) -> Path:
    from cinecloud.render.encode import encode_mp4

    if not crf:
        return src
    frames = decoded(src)
    size = (max(2, round(frames.shape[2] * scale)), max(2, round(frames.shape[1] * scale)))
    return encode_mp4(frames, dst, fps, display_size=size, crf=crf)


def c2pa_rows(out: Path, anchors: str, work: Path) -> dict[str, str]:
    import c2pa

    from cinecloud.render.provenance import verify_c2pa

    def state(path: Path) -> str:
        check = verify_c2pa(path, anchors)
        return f"{check.state} {' '.join(check.failures)}".strip() if check.present else "none"

    rows = {"mp4": state(out / "video.mp4")}
    for init in sorted(out.glob("hls/*/init.mp4")):
        rows[f"init {init.parent.name}"] = state(init)
        segment = sorted(init.parent.glob("seg_*.m4s"))[0]
        settings = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}}
        with (
            c2pa.Context.from_dict(settings) as ctx,
            init.open("rb") as main_stream,
            init.open("rb") as init_stream,
            segment.open("rb") as fragment,
            c2pa.Reader("video/mp4", main_stream, context=ctx) as reader,
        ):
            reader.with_fragment("video/mp4", init_stream, fragment)
            failures = (reader.get_validation_results() or {}).get("activeManifest", {})
            codes = " ".join(f["code"] for f in failures.get("failure", []))
            rows[f"init+segment {init.parent.name}"] = f"{reader.get_validation_state()} {codes}"
    data = bytearray((out / "video.mp4").read_bytes())
    data[-1000] ^= 0xFF
    (work / "tampered.mp4").write_bytes(bytes(data))
    rows["mp4, one byte changed"] = state(work / "tampered.mp4")
    return rows


def one_clip(
    frames: np.ndarray, fps: int, display: tuple[int, int] | None, home: Path, work: Path
) -> dict[str, Any]:
    from cinecloud.config import ProvenanceConfig, QcConfig
    from cinecloud.render.trusted import TrustSettings, render_trusted, scale_frames
    from cinecloud.render.watermark import bit_accuracy, decode_watermark, video_luma

    job = f"video_{secrets.token_hex(12)}"
    on = TrustSettings(ProvenanceConfig(), QcConfig(), home, "cinecloud/bench")
    off = TrustSettings(  # the render as it was before the gate and provenance
        ProvenanceConfig(enabled=False), QcConfig(enabled=False), home, "cinecloud/bench"
    )
    started, cpu = time.perf_counter(), time.process_time()
    result = render_trusted(
        frames, work / "off", fps, job_id=job, settings=off, display_size=display
    )
    plain_s, plain_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    result = render_trusted(frames, work / "on", fps, job_id=job, settings=on, display_size=display)
    marked_s, marked_cpu = time.perf_counter() - started, time.process_time() - cpu
    reference = scale_frames(frames, display) if display else frames
    marked = decoded(work / "on" / "video.mp4").astype(np.float64)
    plain = decoded(work / "off" / "video.mp4").astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(((marked - plain) ** 2).mean(), 1e-9))
    attacks = {}
    for name, (scale, crf) in ATTACKS.items():
        copy = attack(work / "on" / "video.mp4", work / f"{name}.mp4", scale, crf, fps)
        reading = decode_watermark(video_luma(copy))
        attacks[name] = {"bits": bit_accuracy(reading.bits, job), "id": reading.job_id == job}
    anchors = (home / "c2pa" / "ca.pem").read_text()
    return {
        "size": f"{reference.shape[2]}x{reference.shape[1]}",
        "frames": len(frames),
        "psnr_db_vs_unmarked_delivery": round(float(psnr), 2),
        "render_s_plain": plain_s,
        "render_s_provenance": marked_s,
        "mp4_bytes_plain": (work / "off" / "video.mp4").stat().st_size,
        "mp4_bytes_provenance": (work / "on" / "video.mp4").stat().st_size,
        "render_cpu_s_plain": plain_cpu,
        "render_cpu_s_provenance": marked_cpu,
        "qc_s": result.timings["qc"],
        "provenance_s": result.timings["provenance"],
        "attacks": attacks,
        "c2pa": c2pa_rows(work / "on", anchors, work),
    }


# ---------------------------------------------------------------- report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"clips": len(rows), "size": rows[0]["size"], "attacks": {}}
    for name in ATTACKS:
        bits = [r["attacks"][name]["bits"] for r in rows]
        ids = sum(r["attacks"][name]["id"] for r in rows)
        out["attacks"][name] = {
            "bits_mean": statistics.fmean(bits),
            "bits_min": min(bits),
            "id_success": f"{ids}/{len(rows)}",
        }
    keys = (
        "render_s_plain",
        "render_s_provenance",
        "render_cpu_s_plain",
        "render_cpu_s_provenance",
        "qc_s",
        "provenance_s",
    )
    for key in keys:
        out[key] = statistics.median(r[key] for r in rows)
    out["psnr_db_min"] = min(r["psnr_db_vs_unmarked_delivery"] for r in rows)
    growth = [r["mp4_bytes_provenance"] / r["mp4_bytes_plain"] for r in rows]
    out["mp4_size_ratio_median"] = statistics.median(growth)
    out["mp4_size_ratio_max"] = max(growth)
    states: dict[str, dict[str, int]] = {}
    for r in rows:
        for what, state in r["c2pa"].items():
            states.setdefault(what, {}).setdefault(state, 0)
            states[what][state] += 1
    out["c2pa"] = states
    return out


def print_tables(summary: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    marks = Table(title="watermark after re-encoding (112-bit payload)")
    for col in ("source", "size", "attack", "bits right (mean)", "bits right (min)", "whole id"):
        marks.add_column(col)
    for source, s in summary.items():
        for name, a in s["attacks"].items():
            marks.add_row(
                source,
                s["size"],
                name,
                f"{a['bits_mean']:.2%}",
                f"{a['bits_min']:.2%}",
                a["id_success"],
            )
    console.print(marks)
    checks = Table(title="C2PA validation (c2pa-python, this run's test CA trusted)")
    for col in ("source", "file", "result", "clips"):
        checks.add_column(col)
    for source, s in summary.items():
        for what, states in s["c2pa"].items():
            for state, count in states.items():
                checks.add_row(source, what, state, str(count))
    console.print(checks)
    cost = Table(title="render time per job (median, seconds)")
    for col in (
        "source",
        "plain",
        "with provenance",
        "of which QC",
        "of which provenance",
        "PSNR min (dB)",
        "MP4 size x (median, max)",
    ):
        cost.add_column(col)
    for source, s in summary.items():
        cost.add_row(
            source,
            f"{s['render_s_plain']:.3f}",
            f"{s['render_s_provenance']:.3f}",
            f"{s['qc_s']:.3f}",
            f"{s['provenance_s']:.3f}",
            f"{s['psnr_db_min']:.1f}",
            f"{s['mp4_size_ratio_median']:.2f}, {s['mp4_size_ratio_max']:.2f}",
        )
    console.print(cost)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sources = {
        "shapes-t2v": (
            cached(args.clips, lambda: shapes_clips(args.shapes, args.device, args.seed))[
                : args.shapes
            ],
            8,
            (256, 256),
        ),
        "procedural": (procedural_clips(args.procedural, args.seed), 16, None),
    }
    summary, clips = {}, {}
    with tempfile.TemporaryDirectory(prefix="cinecloud-wm-") as tmp:
        home = Path(tmp) / "home"
        for source, (items, fps, display) in sources.items():
            rows = []
            for index, (prompt, frames) in enumerate(items):
                work = Path(tmp) / f"{source}-{index}"
                work.mkdir()
                rows.append({"prompt": prompt, **one_clip(frames, fps, display, home, work)})
            summary[source], clips[source] = summarise(rows), rows
    print_tables(summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "cpu": platform.processor() or platform.machine()}
    args.json.write_text(json.dumps({**meta, "summary": summary, "clips": clips}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
