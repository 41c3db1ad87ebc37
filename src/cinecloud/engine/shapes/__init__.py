"""The procedural shapes world behind ``cinecloud/shapes-t2v``: vocabulary, dataset, reader.

- :mod:`~cinecloud.engine.shapes.vocab`: attribute values, phrasings, the held-out split
  (pure Python).
- :mod:`~cinecloud.engine.shapes.dataset`: scenes, captions, the batched renderer and the
  endless training stream (torch).
- :mod:`~cinecloud.engine.shapes.evaluate`: the classical-vision reader that judges clips
  (numpy, OpenCV, SciPy).

Names load lazily, so ``import cinecloud.engine.shapes.vocab`` imports neither torch nor
OpenCV.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cinecloud.engine.shapes.dataset import (
        Scene,
        ShapesStream,
        caption,
        eval_prompts,
        render,
        render_backgrounds,
        sample_scenes,
        scenes_for_combos,
    )
    from cinecloud.engine.shapes.evaluate import (
        ClipReading,
        read_clip,
        read_frames,
        read_mp4,
        score,
    )
    from cinecloud.engine.shapes.vocab import (
        BACKGROUNDS,
        COLOURS,
        HELDOUT,
        MOTIONS,
        PARAPHRASE_TEMPLATES,
        PARAPHRASES,
        PHRASES,
        SHAPES,
        TEMPLATES,
        compatible,
        is_heldout,
    )

_HOMES = {
    "dataset": (
        "Scene",
        "ShapesStream",
        "caption",
        "eval_prompts",
        "render",
        "render_backgrounds",
        "sample_scenes",
        "scenes_for_combos",
    ),
    "evaluate": ("ClipReading", "read_clip", "read_frames", "read_mp4", "score"),
    "vocab": (
        "BACKGROUNDS",
        "COLOURS",
        "HELDOUT",
        "MOTIONS",
        "PARAPHRASES",
        "PARAPHRASE_TEMPLATES",
        "PHRASES",
        "SHAPES",
        "TEMPLATES",
        "compatible",
        "is_heldout",
    ),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELDOUT",
    "MOTIONS",
    "PARAPHRASES",
    "PARAPHRASE_TEMPLATES",
    "PHRASES",
    "SHAPES",
    "TEMPLATES",
    "ClipReading",
    "Scene",
    "ShapesStream",
    "caption",
    "compatible",
    "eval_prompts",
    "is_heldout",
    "read_clip",
    "read_frames",
    "read_mp4",
    "render",
    "render_backgrounds",
    "sample_scenes",
    "scenes_for_combos",
    "score",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
