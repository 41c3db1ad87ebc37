"""The procedural shapes dataset: scenes, captions and a batched tensor renderer.

A :class:`Scene` holds every random choice of one clip; :func:`render` is a pure function
of the scenes (no randomness inside), vectorised over the batch and the frames with
signed distances on a coordinate grid (each shape in a small window about its centre),
so it runs on CPU or CUDA and feeds a GPU trainer. Edges are anti-aliased with a smooth
step one pixel wide.

Geometry (all in frame fractions, ``y`` pointing down as in images):

- ``size`` is the object's circumradius at the first frame; every shape fits the circle.
- translations move the centre ``speed`` in total (the diagonal ``up-right`` moves
  ``speed / sqrt(2)`` on each axis); ``bouncing`` hops twice, ``speed`` high, from the
  floor ``y0`` and lands on it again; ``growing`` ends at radius ``size * (1 + speed)`` and
  ``shrinking`` at ``size / (1 + speed)``; ``rotating`` turns ``speed`` radians (signed,
  positive is counter-clockwise, at most 150 degrees so the reader can follow a star at
  8 frames); ``still`` ignores ``speed``.
- :func:`sample_scenes` keeps the whole object at least ``_MARGIN`` inside the frame.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from cinecloud.engine.shapes.vocab import (
    ATTRIBUTES,
    BACKGROUND_STYLES,
    BACKGROUNDS,
    COLOURS,
    HELDOUT,
    MOTIONS,
    PARAPHRASE_TEMPLATES,
    PARAPHRASES,
    PHRASES,
    SHAPES,
    TEMPLATES,
    Combo,
    compatible_combos,
    fill_template,
    training_combos,
)

__all__ = [
    "Scene",
    "ShapesStream",
    "caption",
    "eval_prompts",
    "render",
    "render_backgrounds",
    "sample_scenes",
    "scenes_for_combos",
]

Split = Literal["train", "heldout", "any"]
CaptionStyle = Literal["train", "paraphrase"]
EvalSplit = Literal["seen", "heldout", "paraphrase"]

_MARGIN = 0.02  # gap between the object's circumcircle and the frame edge
_STAR_INNER = 0.45  # inner radius of the five-pointed star, relative to the outer
_RING_INNER = 0.55  # hole radius of the ring, relative to the outer
_SQUARE_HALF = 1 / math.sqrt(2)  # half side of a square with circumradius 1
_BOUNCES = 2

_VALUES: tuple[tuple[str, ...], ...] = (tuple(COLOURS), SHAPES, MOTIONS, BACKGROUNDS)

# (low, high) of the uniform draws per motion: start radius and speed.
_SIZE_RANGE = {"growing": (0.08, 0.10), "shrinking": (0.14, 0.18)}
_DEFAULT_SIZE = (0.11, 0.16)
_SPEED_RANGE = {
    "left": (0.30, 0.45),
    "right": (0.30, 0.45),
    "up": (0.30, 0.45),
    "down": (0.30, 0.45),
    "up-right": (0.40, 0.55),
    "bouncing": (0.25, 0.40),
    "growing": (0.50, 0.80),
    "shrinking": (0.50, 0.80),
    "rotating": (math.radians(100), math.radians(150)),
    "still": (0.0, 0.0),
}


@dataclass(frozen=True)
class Scene:
    """Every choice that defines one clip (see the module docstring for the geometry)."""

    colour: str
    shape: str
    motion: str
    background: str
    size: float  # object circumradius at the first frame, as a fraction of the frame
    x0: float  # start centre in [0, 1] coordinates
    y0: float
    speed: float  # motion magnitude over the clip (signed radians for rotating)
    angle0: float  # initial rotation in radians

    @property
    def combo(self) -> tuple[str, str, str, str]:
        return (self.colour, self.shape, self.motion, self.background)


# ---------------------------------------------------------------- sampling


def _split_combos(split: Split) -> list[Combo]:
    if split == "train":
        return training_combos()
    if split == "heldout":
        return sorted(HELDOUT)
    if split == "any":
        return compatible_combos()
    raise ValueError(f"split must be 'train', 'heldout' or 'any' (got {split!r})")


@functools.cache
def _combo_weights(split: Split) -> tuple[tuple[Combo, ...], torch.Tensor]:
    """Combo weights whose marginals are as uniform as possible (iterative proportional fit)."""
    combos = tuple(_split_combos(split))
    index = torch.tensor(
        [[vocab.index(v) for v, vocab in zip(c, _VALUES, strict=True)] for c in combos]
    )
    weights = torch.ones(len(combos), dtype=torch.float64)
    for _ in range(60):
        for a, values in enumerate(_VALUES):
            marginal = torch.zeros(len(values), dtype=torch.float64)
            marginal.index_add_(0, index[:, a], weights)
            present = marginal > 0
            target = weights.sum() / present.sum()
            scale = torch.where(present, target / marginal.clamp_min(1e-12), 0.0)
            weights = weights * scale[index[:, a]]
    return combos, weights / weights.sum()


def _uniform(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


def _make_scene(combo: Combo, u: Sequence[float]) -> Scene:
    """A scene for ``combo`` from six uniform [0, 1) numbers."""
    colour, shape, motion, background = combo
    size = _uniform(*_SIZE_RANGE.get(motion, _DEFAULT_SIZE), u[0])
    speed = _uniform(*_SPEED_RANGE[motion], u[1])
    r_max = size * (1 + speed) if motion == "growing" else size
    lo, hi = r_max + _MARGIN, 1 - r_max - _MARGIN
    dx, dy = _travel(motion, speed)
    x0 = _uniform(lo + max(0.0, -dx), hi - max(0.0, dx), u[2])
    y0 = _uniform(lo + max(0.0, -dy), hi - max(0.0, dy), u[3])
    if motion == "rotating" and u[5] < 0.5:
        speed = -speed
    angle0 = 2 * math.pi * u[4]
    return Scene(colour, shape, motion, background, size, x0, y0, speed, angle0)


def _travel(motion: str, speed: float) -> tuple[float, float]:
    """The extreme (dx, dy) of the centre over the clip, for placing the start."""
    diagonal = speed / math.sqrt(2)
    return {
        "left": (-speed, 0.0),
        "right": (speed, 0.0),
        "up": (0.0, -speed),
        "down": (0.0, speed),
        "up-right": (diagonal, -diagonal),
        "bouncing": (0.0, -speed),
    }.get(motion, (0.0, 0.0))


def scenes_for_combos(
    combos: Sequence[tuple[str, str, str, str]], gen: torch.Generator
) -> list[Scene]:
    """One scene per combo, with sizes, positions, speeds and angles drawn from ``gen``."""
    for combo in combos:
        _check_combo(combo)
    draws = torch.rand(len(combos), 6, generator=gen, dtype=torch.float64).tolist()
    return [_make_scene(tuple(c), u) for c, u in zip(combos, draws, strict=True)]  # type: ignore[arg-type]


def sample_scenes(n: int, gen: torch.Generator, *, split: Split = "train") -> list[Scene]:
    """``n`` random scenes whose combos come from ``split``, values about uniform."""
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    combos, weights = _combo_weights(split)
    if n == 0:
        return []
    picks = torch.multinomial(weights, n, replacement=True, generator=gen).tolist()
    return scenes_for_combos([combos[i] for i in picks], gen)


def _check_combo(combo: Sequence[str]) -> None:
    if len(combo) != len(ATTRIBUTES):
        raise ValueError(f"a combo has {len(ATTRIBUTES)} values (got {len(combo)})")
    for value, values, name in zip(combo, _VALUES, ATTRIBUTES, strict=True):
        if value not in values:
            raise ValueError(f"unknown {name} {value!r}")


# ---------------------------------------------------------------- captions


def _captions(scenes: Sequence[Scene], gen: torch.Generator, style: CaptionStyle) -> list[str]:
    if style == "train":
        templates, phrases = TEMPLATES, PHRASES
    elif style == "paraphrase":
        templates, phrases = PARAPHRASE_TEMPLATES, PARAPHRASES
    else:
        raise ValueError(f"style must be 'train' or 'paraphrase' (got {style!r})")
    draws = torch.randint(0, 2**30, (len(scenes), 5), generator=gen).tolist()
    out = []
    for scene, picks in zip(scenes, draws, strict=True):
        words = {}
        for attribute, value, pick in zip(ATTRIBUTES, scene.combo, picks[1:], strict=True):
            options = phrases[attribute][value]
            words[attribute] = options[pick % len(options)]
        out.append(fill_template(templates[picks[0] % len(templates)], words))
    return out


def caption(scene: Scene, gen: torch.Generator, *, style: CaptionStyle = "train") -> str:
    """A caption for ``scene``: a random template filled with random phrasings of ``style``."""
    return _captions([scene], gen, style)[0]


def eval_prompts(
    split: EvalSplit, n: int, seed: int
) -> list[tuple[str, tuple[str, str, str, str]]]:
    """``n`` (prompt, combo) pairs for evaluating a model.

    ``seen``: training combos, training phrasing. ``heldout``: held-out combos, training
    phrasing. ``paraphrase``: training combos, phrasing never used in training.
    """
    if split not in ("seen", "heldout", "paraphrase"):
        raise ValueError(f"split must be 'seen', 'heldout' or 'paraphrase' (got {split!r})")
    gen = torch.Generator().manual_seed(seed)
    scenes = sample_scenes(n, gen, split="heldout" if split == "heldout" else "train")
    style: CaptionStyle = "paraphrase" if split == "paraphrase" else "train"
    return [(text, s.combo) for text, s in zip(_captions(scenes, gen, style), scenes, strict=True)]


# ---------------------------------------------------------------- backgrounds


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1]: ``u`` shaped (1, W) and ``v`` shaped (H, 1)."""
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    return centres[None, :], centres[:, None]


def _rgb(colour: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32, device=device)[:, None, None] / 255


def _grass(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Zero-mean blade pattern in [-1, 1]: two slanted, wavy stripe families."""
    wave = 0.25 * torch.sin(2 * math.pi * 2 * v)
    blades = torch.sin(2 * math.pi * (9 * u + wave))
    fine = torch.sin(2 * math.pi * (17 * u - 3 * v + 0.3))
    return 0.55 * blades + 0.45 * fine


def _mortar(u: torch.Tensor, v: torch.Tensor, size: int) -> torch.Tensor:
    """Mortar coverage in [0, 1] of a running-bond wall: 8 courses, 4 bricks a course."""
    rows = v * 8
    course = torch.floor(rows)
    cols = u * 4 + 0.5 * torch.remainder(course, 2)
    to_row = torch.minimum(rows - course, torch.ceil(rows) - rows) * size / 8
    to_col = torch.minimum(cols - torch.floor(cols), torch.ceil(cols) - cols) * size / 4
    distance = torch.minimum(to_row.expand_as(to_col), to_col)
    return (1.1 - distance).clamp(0, 1)


def _background(name: str, size: int, device: torch.device) -> torch.Tensor:
    style = BACKGROUND_STYLES[name]
    u, v = _grid(size, device)
    top, bottom = _rgb(style.top, device), _rgb(style.bottom, device)
    if style.kind == "solid":
        return top
    if style.kind == "gradient":
        return top + (bottom - top) * v
    detail = _rgb(style.detail or style.top, device)
    if name == "grass":
        return top + (detail - top) * _grass(u, v)
    if name == "brick":
        return top + (detail - top) * _mortar(u, v, size)
    raise ValueError(f"no texture for background {name!r}")


@functools.lru_cache(maxsize=16)
def _background_bank(size: int, device: torch.device) -> torch.Tensor:
    layers = [_background(name, size, device).expand(3, size, size) for name in BACKGROUNDS]
    return torch.stack(layers).clamp(0, 1)


def render_backgrounds(
    names: Sequence[str], size: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The backgrounds ``names`` as (N, 3, size, size) float32 in [0, 1]."""
    unknown = [n for n in names if n not in BACKGROUNDS]
    if unknown:
        raise ValueError(f"unknown background {unknown[0]!r}")
    bank = _background_bank(size, torch.device(device))
    return bank[[BACKGROUNDS.index(n) for n in names]]


# ---------------------------------------------------------------- shapes


def _length(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def _sd_circle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _length(x, y) - 1


def _sd_ring(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    half = (1 - _RING_INNER) / 2
    return (_length(x, y) - (1 - half)).abs() - half


def _sd_square(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx, dy = x.abs() - _SQUARE_HALF, y.abs() - _SQUARE_HALF
    outside = _length(dx.clamp_min(0), dy.clamp_min(0))
    return outside + torch.maximum(dx, dy).clamp_max(0)


def _sd_triangle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle, circumradius 1, apex up (y up)."""
    k, half = math.sqrt(3), math.sqrt(3) / 2
    x, y = x.abs() - half, y + half / k
    fold = x + k * y > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * half, 0)
    return -_length(x, y) * torch.sign(y)


def _sd_star(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Five-pointed star, outer radius 1, inner radius ``_STAR_INNER``, a point up (y up)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    x = x.abs()
    d = (k1x * x + k1y * y).clamp_min(0)
    x, y = x - 2 * d * k1x, y - 2 * d * k1y
    d = (-k1x * x + k1y * y).clamp_min(0)
    x, y = (x + 2 * d * k1x).abs(), y - 2 * d * k1y - 1
    bax, bay = -_STAR_INNER * k1y, _STAR_INNER * k1x - 1
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0, 1)
    return _length(x - bax * h, y - bay * h) * torch.sign(y * bax - x * bay)


_SDF = {
    "circle": _sd_circle,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "star": _sd_star,
    "ring": _sd_ring,
}


# ---------------------------------------------------------------- render


def _coefficients(scenes: Sequence[Scene], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-scene (B, 1) tensors: the fields and the motion's direction and mode switches."""
    diagonal = 1 / math.sqrt(2)
    kx = {"left": -1.0, "right": 1.0, "up-right": diagonal}
    ky = {"up": -1.0, "down": 1.0, "up-right": -diagonal}
    rows = [
        (
            s.x0,
            s.y0,
            s.size,
            s.speed,
            s.angle0,
            kx.get(s.motion, 0.0),
            ky.get(s.motion, 0.0),
            float(s.motion == "bouncing"),
            float(s.motion == "growing"),
            float(s.motion == "shrinking"),
            float(s.motion == "rotating"),
        )
        for s in scenes
    ]
    names = ("x0", "y0", "size", "speed", "angle0", "kx", "ky", "bounce", "grow", "shrink", "rot")
    table = torch.tensor(rows, dtype=torch.float32, device=device)
    return {name: table[:, i : i + 1] for i, name in enumerate(names)}


def _trajectory(
    scenes: Sequence[Scene], frames: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre x, centre y, radius and angle per scene and frame, each (B, T)."""
    c = _coefficients(scenes, device)
    t = (
        torch.linspace(0, 1, frames, device=device)[None, :]
        if frames > 1
        else torch.zeros(1, 1, device=device)
    )
    hop = (torch.pi * _BOUNCES * t).sin().abs()
    cx = c["x0"] + c["kx"] * c["speed"] * t
    cy = c["y0"] + c["ky"] * c["speed"] * t - c["bounce"] * c["speed"] * hop
    growth = 1 + c["speed"] * t
    scale = 1 + c["grow"] * (growth - 1) + c["shrink"] * (1 / growth - 1)
    angle = c["angle0"] + c["rot"] * c["speed"] * t
    return cx, cy, c["size"] * scale, angle


def _max_radius(scenes: Sequence[Scene]) -> float:
    """The largest circumradius any of ``scenes`` reaches (frame fraction)."""
    return max(s.size * (1 + s.speed) if s.motion == "growing" else s.size for s in scenes)


def _window(scenes: Sequence[Scene], size: int) -> int:
    """Side in pixels of a square window that holds the object with its anti-aliased edge."""
    return min(size, 2 * math.ceil(_max_radius(scenes) * size) + 6)


def _origin(centre: torch.Tensor, side: int, size: int) -> torch.Tensor:
    return (centre * size - side / 2).round().long().clamp(0, size - side)


def _coverage(
    shape: str,
    track: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    size: int,
    side: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anti-aliased coverage (B, T, side, side) of ``shape`` in a window about each centre.

    Returns the coverage and the window's pixel origins ``ox`` and ``oy``, each (B, T).
    """
    ox, oy = _origin(track[0], side, size), _origin(track[1], side, size)
    cx, cy, radius, angle = (x[:, :, None, None] for x in track)
    steps = torch.arange(side, device=cx.device, dtype=torch.float32) + 0.5
    u = (ox[:, :, None, None] + steps[None, :]) / size
    v = (oy[:, :, None, None] + steps[:, None]) / size
    dx, dy = (u - cx) / radius, (cy - v) / radius  # local frame, y up, unit circumradius
    cos, sin = angle.cos(), angle.sin()
    x, y = cos * dx + sin * dy, cos * dy - sin * dx  # rotate the frame by -angle
    signed_px = _SDF[shape](x, y) * radius * size
    t = (0.5 - signed_px).clamp(0, 1)
    return t * t * (3 - 2 * t), ox, oy


def _paste(
    canvas: torch.Tensor,
    rows: torch.Tensor,
    window: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Write window coverages into ``canvas`` (B, T, H, W) at scene indices ``rows``."""
    cover, ox, oy = window
    _, frames, size, _ = canvas.shape
    side = cover.shape[-1]
    steps = torch.arange(side, device=canvas.device)
    frame = rows[:, None] * frames + torch.arange(frames, device=canvas.device)[None, :]
    corner = (frame * size + oy) * size + ox
    flat = corner[:, :, None, None] + steps[:, None] * size + steps[None, :]
    canvas.view(-1).index_put_((flat.reshape(-1),), cover.reshape(-1))


def _check_render(scenes: Sequence[Scene], frames: int, size: int) -> None:
    if not scenes:
        raise ValueError("render needs at least one scene")
    if frames < 1:
        raise ValueError(f"frames must be >= 1 (got {frames})")
    if size < 8:
        raise ValueError(f"size must be >= 8 (got {size})")
    for scene in scenes:
        _check_combo(scene.combo)


def render(
    scenes: Sequence[Scene],
    *,
    frames: int = 16,
    size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Clips of ``scenes`` as (B, T, 3, H, W) float32 in [0, 1]; a pure function of the scenes."""
    _check_render(scenes, frames, size)
    device = torch.device(device)
    track = _trajectory(scenes, frames, device)
    coverage = torch.zeros(len(scenes), frames, size, size, device=device)
    for shape in sorted({s.shape for s in scenes}):
        members = [i for i, s in enumerate(scenes) if s.shape == shape]
        rows = torch.tensor(members, device=device)
        part = tuple(x.index_select(0, rows) for x in track)
        side = _window([scenes[i] for i in members], size)
        _paste(coverage, rows, _coverage(shape, part, size, side))  # type: ignore[arg-type]
    background = render_backgrounds([s.background for s in scenes], size, device)[:, None]
    palette = torch.tensor([COLOURS[s.colour] for s in scenes], dtype=torch.float32, device=device)
    colour = (palette / 255)[:, None, :, None, None]
    return torch.lerp(background, colour, coverage[:, :, None])


# ---------------------------------------------------------------- stream


class ShapesStream:
    """Endless training batches of (clips in [-1, 1] shaped (B, T, 3, H, W), captions).

    Scenes and captions come from a CPU generator seeded with ``gen_seed``; clips are
    rendered on ``device``. With probability ``caption_dropout`` a caption is ``""``.
    """

    def __init__(
        self,
        batch_size: int,
        gen_seed: int,
        frames: int = 16,
        size: int = 64,
        device: str | torch.device = "cpu",
        caption_dropout: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1] (got {caption_dropout})")
        self.batch_size, self.frames, self.size = batch_size, frames, size
        self.device = torch.device(device)
        self.caption_dropout = caption_dropout
        self.gen = torch.Generator().manual_seed(gen_seed)

    def __iter__(self) -> ShapesStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, list[str]]:
        scenes = sample_scenes(self.batch_size, self.gen, split="train")
        texts = _captions(scenes, self.gen, "train")
        dropped = (torch.rand(self.batch_size, generator=self.gen) < self.caption_dropout).tolist()
        texts = ["" if drop else text for text, drop in zip(texts, dropped, strict=True)]
        clips = render(scenes, frames=self.frames, size=self.size, device=self.device)
        return clips.mul_(2).sub_(1), texts
