"""Model families: how one kind of pipeline loads, encodes, denoises and decodes.

A family is named by :attr:`ModelSpec.family <cinecloud.engine.registry.ModelSpec.family>`.
The runner stays generic; everything that knows about a particular pipeline lives in
one module here (``wan.py`` for Wan). To add a family (LTX, CogVideoX, ...), write a
class that follows :class:`Family` and add a loader to :data:`FAMILIES`.

Importing this package does not import torch; a family's module is imported only when
:func:`make_family` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from cinecloud.engine.registry import GenerationParams

__all__ = ["FAMILIES", "Family", "make_family"]


class Family(Protocol):
    """One model family's pipeline: loaded once, then run many times.

    ``encode`` and ``denoise`` return opaque values (tensors) that only the same family
    consumes. ``denoise`` calls ``on_step(k)`` after its k-th step (k = 1..params.steps);
    an exception raised by ``on_step`` must stop the loop and propagate.
    """

    def load(self, source: Path, *, device: str, dtype: str, offload: str = "none") -> None: ...

    def set_vae_tiling(self, on: bool) -> None: ...

    def denoiser(self) -> Any: ...

    def encode(self, params: GenerationParams) -> Any: ...

    def denoise(
        self, encoded: Any, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> Any: ...

    def decode(self, latents: Any) -> np.ndarray:
        """The video as uint8 frames shaped (T, H, W, 3)."""
        ...


def _wan_t2v() -> Family:
    from cinecloud.engine.families.wan import WanT2V

    return WanT2V()


def _shapes_t2v() -> Family:
    from cinecloud.engine.families.shapes import ShapesT2V

    return ShapesT2V()


def _ltx_t2v() -> Family:
    from cinecloud.engine.families.ltx import LTXT2V

    return LTXT2V()


def _cogvideox_t2v() -> Family:
    from cinecloud.engine.families.cogvideox import CogVideoXT2V

    return CogVideoXT2V()


def _wan_i2v() -> Family:
    from cinecloud.engine.families.wan_i2v import WanI2V

    return WanI2V()


def _ltx_i2v() -> Family:
    from cinecloud.engine.families.ltx import LTXI2V

    return LTXI2V()


def _svd() -> Family:
    from cinecloud.engine.families.svd import StableVideoDiffusion

    return StableVideoDiffusion()


def _hunyuan_t2v() -> Family:
    from cinecloud.engine.families.hunyuan import HunyuanT2V

    return HunyuanT2V()


FAMILIES: dict[str, Callable[[], Family]] = {
    "wan-t2v": _wan_t2v,
    "shapes-t2v": _shapes_t2v,
    "ltx-t2v": _ltx_t2v,
    "cogvideox-t2v": _cogvideox_t2v,
    "wan-i2v": _wan_i2v,
    "ltx-i2v": _ltx_i2v,
    "svd": _svd,
    "hunyuan-t2v": _hunyuan_t2v,
}


def make_family(name: str) -> Family:
    """A fresh, unloaded pipeline of the family ``name``."""
    try:
        factory = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
    return factory()
