"""Real checkpoints of the supported families, as diffusers pipelines.

Each entry names a Hugging Face repository in the diffusers layout, the family that
runs it, its defaults as published, its limits and a memory profile. The weights are
looked for, in order, in ``<models_dir>/<name>/`` and in the local Hugging Face cache
(``HF_HOME``/``HF_HUB_CACHE``); nothing is downloaded at run time. When neither
holds them, the registry's "not installed" error names the directory and the
command that fetches them there.

Torch-free: the API validates requests against these specs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinecloud.engine.memory import MemoryProfile
from cinecloud.engine.specs import INSTALLED_MARKER

__all__ = [
    "LTX_SCHEDULER",
    "REAL_MODELS",
    "WAN_SCHEDULER",
    "RealModel",
    "hf_cache_snapshot",
    "real_model_source",
]


@dataclass(frozen=True)
class RealModel:
    repo: str  # Hugging Face repository, diffusers layout
    name: str  # directory under models_dir
    family: str  # a key of cinecloud.engine.families.FAMILIES
    what: str
    # (width, height, num_frames, fps, steps, guidance), as the model card publishes
    defaults: tuple[int, int, int, int, int, float]
    limits: str  # a key of the registry's family limits
    input_image: str
    memory: MemoryProfile

    @property
    def model_id(self) -> str:
        return self.repo


# Weights: parameter counts from the model cards at 2 bytes a weight. Activations per
# million pixel-frames: estimates from each architecture (attention and MLP working set
# with guidance batched; the VAE decoder's widest feature maps), not yet measured.
# The published checkpoints' scheduler settings, for builds of their architectures with
# other weights (tiny test checkpoints, full-size random-weight benchmarks).
WAN_SCHEDULER: dict[str, Any] = {  # Wan2.1-T2V-1.3B-Diffusers: UniPC on flow sigmas, 480p
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
}
LTX_SCHEDULER: dict[str, Any] = {  # LTX-Video: resolution-dependent shift, stretched to 0.1
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}

REAL_MODELS: tuple[RealModel, ...] = (
    RealModel(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "wan2.1-t2v-1.3b",
        "wan-t2v",
        "Wan 2.1 text-to-video, 1.3B",
        (832, 480, 81, 16, 50, 5.0),
        "wan-t2v",
        "none",
        MemoryProfile(
            transformer_gib=2.6,
            text_encoder_gib=10.6,
            other_gib=0.5,
            denoise_gib_per_mpf=0.35,
            decode_gib_per_mpf=0.55,
        ),
    ),
    RealModel(
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
        "wan2.1-t2v-14b",
        "wan-t2v",
        "Wan 2.1 text-to-video, 14B",
        (1280, 720, 81, 16, 50, 5.0),
        "wan-t2v",
        "none",
        MemoryProfile(
            transformer_gib=26.6,
            text_encoder_gib=10.6,
            other_gib=0.5,
            denoise_gib_per_mpf=0.6,
            decode_gib_per_mpf=0.55,
        ),
    ),
    RealModel(
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "wan2.1-i2v-14b-480p",
        "wan-i2v",
        "Wan 2.1 image-to-video, 14B, 480p",
        (832, 480, 81, 16, 50, 5.0),
        "wan-i2v",
        "required",
        MemoryProfile(
            transformer_gib=30.7,
            text_encoder_gib=10.6,
            other_gib=1.7,
            denoise_gib_per_mpf=0.6,
            decode_gib_per_mpf=0.55,
        ),
    ),
    RealModel(
        "Lightricks/LTX-Video",
        "ltx-video",
        "ltx-t2v",
        "LTX-Video text-to-video, 2B",
        (704, 480, 161, 24, 50, 3.0),
        "ltx",
        "none",
        MemoryProfile(
            transformer_gib=3.6,
            text_encoder_gib=8.9,
            other_gib=0.8,
            denoise_gib_per_mpf=0.05,
            decode_gib_per_mpf=0.45,
        ),
    ),
    RealModel(
        "Lightricks/LTX-Video-i2v",
        "ltx-video-i2v",
        "ltx-i2v",
        "LTX-Video image-to-video, 2B",
        (704, 480, 161, 24, 50, 3.0),
        "ltx",
        "required",
        MemoryProfile(
            transformer_gib=3.6,
            text_encoder_gib=8.9,
            other_gib=0.8,
            denoise_gib_per_mpf=0.05,
            decode_gib_per_mpf=0.45,
        ),
    ),
    RealModel(
        "THUDM/CogVideoX-2b",
        "cogvideox-2b",
        "cogvideox-t2v",
        "CogVideoX text-to-video, 2B",
        (720, 480, 49, 8, 50, 6.0),
        "cogvideox",
        "none",
        MemoryProfile(
            transformer_gib=3.2,
            text_encoder_gib=8.9,
            other_gib=0.4,
            denoise_gib_per_mpf=0.4,
            decode_gib_per_mpf=1.2,
        ),
    ),
    RealModel(
        "THUDM/CogVideoX-5b",
        "cogvideox-5b",
        "cogvideox-t2v",
        "CogVideoX text-to-video, 5B",
        (720, 480, 49, 8, 50, 6.0),
        "cogvideox",
        "none",
        MemoryProfile(
            transformer_gib=10.5,
            text_encoder_gib=8.9,
            other_gib=0.4,
            denoise_gib_per_mpf=0.6,
            decode_gib_per_mpf=1.2,
        ),
    ),
    RealModel(
        "hunyuanvideo-community/HunyuanVideo",
        "hunyuanvideo",
        "hunyuan-t2v",
        "HunyuanVideo text-to-video, 13B",
        (1280, 720, 129, 24, 50, 6.0),
        "hunyuan",
        "none",
        MemoryProfile(
            transformer_gib=23.9,
            text_encoder_gib=15.2,
            other_gib=0.8,
            denoise_gib_per_mpf=0.3,
            decode_gib_per_mpf=0.6,
        ),
    ),
    RealModel(
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "svd-xt",
        "svd",
        "Stable Video Diffusion XT image-to-video",
        (1024, 576, 25, 7, 25, 3.0),
        "svd",
        "required",
        MemoryProfile(
            transformer_gib=2.8,
            text_encoder_gib=1.2,
            other_gib=0.2,
            denoise_gib_per_mpf=1.0,
            decode_gib_per_mpf=1.5,
        ),
    ),
)


def hf_cache_snapshot(repo: str, cache_dir: Path | None = None) -> Path | None:
    """The newest complete snapshot of ``repo`` in the local Hugging Face cache, if any.

    Reads the cache layout only (``models--org--name/snapshots/<rev>/``), through
    ``huggingface_hub`` when it is installed; never touches the network.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    try:
        found = snapshot_download(repo, cache_dir=cache_dir, local_files_only=True)
    except Exception:
        return None
    path = Path(str(found))
    return path if (path / INSTALLED_MARKER).is_file() else None


def real_model_source(model: RealModel, models_dir: Path, cache_dir: Path | None = None) -> Path:
    """Where ``model``'s pipeline is: ``models_dir/<name>`` if there, else the HF cache.

    When neither holds it, ``models_dir/<name>`` is returned, so the "not installed"
    error names the directory the fetch command fills.
    """
    local = models_dir / model.name
    if (local / INSTALLED_MARKER).is_file():
        return local
    return hf_cache_snapshot(model.repo, cache_dir) or local


def fetch_command(model: RealModel, models_dir: Path) -> str:
    target = shlex.quote(str(models_dir / model.name))
    return f"hf download {model.repo} --local-dir {target}"
