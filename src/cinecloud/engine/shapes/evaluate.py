"""Read a shapes clip back with classical computer vision: colour, shape, motion, background.

The reader works on any resolution (clips are resized to ``_WORK`` pixels square) and on
lossy H.264, and needs no learned model:

1. **Background.** The per-pixel temporal median is the background wherever the object
   moves on. Where it never does, the median still shows the object; those pixels (far
   from their row's median, dilated) take the row median instead. Each frame then gets a
   robust per-channel offset, so a global brightness drift is not read as the object.
   The background's class is the reference whose top- and bottom-band mean colours are
   nearest (solids have equal bands, gradients differ, textures average to their base).
2. **Colour.** Pixels far from the background, eroded to the object's interior, give a
   median colour; the nearest palette colour is the answer.
3. **Mask.** A pixel belongs to the object when it is nearer the object colour than the
   background model (and not within noise of the background); the largest connected
   component per frame is the object.
4. **Shape.** On the larger half of the frames: a hole (filled area well above the area)
   is a ring; a flat polar signature (largest radius per angle) is a circle; else the
   strongest of its 3-, 4- and 5-fold harmonics names triangle, square or star.
5. **Motion.** Area ratio of the last to the first frames (growing, shrinking); a
   vertical range with little net vertical travel (bouncing); net centroid travel by a
   least-squares fit (left, right, up, down, up-right); summed frame-to-frame rotation from
   the circular cross-correlation of the polar radius signature (rotating); else still.

Temporal consistency, both as fractions of full scale (lower is steadier):

- ``flow_warp_error``: Farneback optical flow from frame t+1 back to frame t, frame t
  warped along it, then the mean absolute RGB difference to frame t+1; averaged over pairs.
- ``flicker``: the mean absolute change of mean luma (BT.709 weights) between frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinecloud.engine.shapes.vocab import (
    ATTRIBUTES,
    BACKGROUND_STYLES,
    COLOURS,
    BackgroundStyle,
)

__all__ = ["ClipReading", "read_clip", "read_frames", "read_mp4", "score"]

_WORK = 128  # side of the square the reader works at
_STUCK = 60.0  # RGB distance from the row median that marks the object in the median frame
_ROUGH = 55.0  # RGB distance from the background that surely is object
_CORE_PERCENTILE = 60.0  # far pixels below this percentile of distance are edge
_NOISE = 25.0  # RGB distance from the background that may be codec noise
_MIN_AREA = 12  # pixels (at _WORK) for a component to count as the object
_BACKGROUND_MAX = 150.0  # summed band distance beyond which no background is named
_COLOUR_MAX = 160.0  # RGB distance beyond which no palette colour is named

_GROW = 1.45  # area ratio for growing / shrinking
_TRAVEL = 0.12  # net centroid travel (frame fraction) for a translation
_BOUNCE = 0.10  # vertical range (frame fraction) for a bounce
_ROTATION = 45.0  # net degrees for rotating
_RING_HOLE = 0.12  # hole share of the filled outline for a ring
_ROUND_HARMONIC = 0.05  # strongest 3/4/5-fold amplitude below which the outline is round
_DIRECTIONS = {"right": 0.0, "up-right": 45.0, "up": 90.0, "left": 180.0, "down": 270.0}

_BINS = 72  # polar signature bins (5 degrees each)
_MAX_STEP = 7  # largest rotation between frames searched, in bins (35 degrees)


@dataclass(frozen=True)
class ClipReading:
    """What the reader saw; ``None`` where it could not decide."""

    colour: str | None
    shape: str | None
    motion: str | None
    background: str | None
    flow_warp_error: float
    flicker: float

    @property
    def combo(self) -> tuple[str | None, str | None, str | None, str | None]:
        return (self.colour, self.shape, self.motion, self.background)


@dataclass(frozen=True)
class _Track:
    """Per-frame object measurements; NaN where the object was not found."""

    cx: np.ndarray  # centroid x, frame fraction
    cy: np.ndarray  # centroid y, frame fraction (down)
    area: np.ndarray  # pixels at _WORK
    signatures: list[np.ndarray | None]  # polar radius signatures (see _signature)
    rotation: float  # summed signed rotation, degrees (counter-clockwise positive)


# ---------------------------------------------------------------- entry points


def read_mp4(path: Path) -> ClipReading:
    """Decode ``path`` with PyAV and read it."""
    return read_clip(read_frames(path))


def read_frames(path: Path) -> np.ndarray:
    """Every frame of the first video stream of ``path`` as uint8 (T, H, W, 3) RGB."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"no frames in {path}")
    return np.stack(frames)


def read_clip(frames: np.ndarray) -> ClipReading:
    """Read colour, shape, motion and background of uint8 (T, H, W, 3) RGB frames."""
    _check_frames(frames)
    work = _resize(frames)
    background = _background_model(work)
    flow_warp_error, flicker = _temporal(work)
    bg_name = _classify_background(background.mean(axis=0))
    colour_rgb = _object_colour(work, background)
    if colour_rgb is None:
        return ClipReading(None, None, None, bg_name, flow_warp_error, flicker)
    colour = _nearest_colour(colour_rgb)
    masks = _object_masks(work, background, colour_rgb)
    track = _track(masks)
    shape = _classify_shape(masks, track)
    motion = _classify_motion(track)
    return ClipReading(colour, shape, motion, bg_name, flow_warp_error, flicker)


def score(
    readings: Sequence[ClipReading], combos: Sequence[tuple[str, str, str, str]]
) -> dict[str, float]:
    """Accuracy per attribute and ``all`` (every attribute right), as fractions in [0, 1]."""
    if len(readings) != len(combos):
        raise ValueError(f"{len(readings)} readings for {len(combos)} combos")
    if not readings:
        raise ValueError("score needs at least one reading")
    right = np.array(
        [
            [got == want for got, want in zip(r.combo, c, strict=True)]
            for r, c in zip(readings, combos, strict=True)
        ]
    )
    result = {name: float(right[:, i].mean()) for i, name in enumerate(ATTRIBUTES)}
    result["all"] = float(right.all(axis=1).mean())
    return result


def _check_frames(frames: np.ndarray) -> None:
    ok = (
        isinstance(frames, np.ndarray)
        and frames.dtype == np.uint8
        and frames.ndim == 4
        and frames.shape[3] == 3
        and frames.shape[0] >= 2
        and min(frames.shape[1:3]) >= 8
    )
    if not ok:
        shape = getattr(frames, "shape", "?")
        raise ValueError(f"frames must be uint8 (T>=2, H>=8, W>=8, 3), got {shape}")


def _resize(frames: np.ndarray) -> np.ndarray:
    """Float32 (T, _WORK, _WORK, 3): area-averaged down, or linearly up."""
    import cv2

    _, height, width, _ = frames.shape
    smaller = height >= _WORK and width >= _WORK
    method = cv2.INTER_AREA if smaller else cv2.INTER_LINEAR
    out = [cv2.resize(f, (_WORK, _WORK), interpolation=method) for f in frames]
    return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------- background


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a - b
    return np.asarray(np.sqrt((diff * diff).sum(axis=-1)))


def _background_model(work: np.ndarray) -> np.ndarray:
    """Per-frame background (T, S, S, 3): temporal median, patched where the object stays."""
    import cv2

    median = np.median(work, axis=0)
    rows = np.median(median, axis=1, keepdims=True)
    stuck = (_distance(median, rows) > _STUCK).astype(np.uint8)
    stuck = cv2.dilate(stuck, np.ones((7, 7), np.uint8)).astype(bool)
    base = np.where(stuck[..., None], np.broadcast_to(rows, median.shape), median)
    offset = np.median((work - base).reshape(work.shape[0], -1, 3), axis=1)
    return np.asarray(base[None] + offset[:, None, None, :])


def _band_reference(style: BackgroundStyle) -> np.ndarray:
    top, bottom = np.array(style.top, np.float32), np.array(style.bottom, np.float32)
    return np.stack([top + (bottom - top) / 8, bottom + (top - bottom) / 8])


def _classify_background(image: np.ndarray) -> str | None:
    """The background whose top and bottom quarter mean colours are nearest."""
    quarter = image.shape[0] // 4
    bands = np.stack([image[:quarter].mean(axis=(0, 1)), image[-quarter:].mean(axis=(0, 1))])
    costs = {
        name: float(_distance(bands, _band_reference(style)).sum())
        for name, style in BACKGROUND_STYLES.items()
    }
    best = min(costs, key=costs.__getitem__)
    return best if costs[best] <= _BACKGROUND_MAX else None


# ---------------------------------------------------------------- colour and mask


_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _PALETTE_NAMES], np.float32)


def _object_colour(work: np.ndarray, background: np.ndarray) -> np.ndarray | None:
    """Median RGB of the object's core; None if nothing stands out from the background.

    The core is the part of the pixels far from the background that is farthest from it:
    the least mixed with the background by anti-aliasing, blur or chroma subsampling.
    """
    distance = _distance(work, background)
    far = distance > _ROUGH
    if far.sum() < _MIN_AREA:
        return None
    core = far & (distance >= np.percentile(distance[far], _CORE_PERCENTILE))
    return np.asarray(np.median(work[core], axis=0))


def _nearest_colour(rgb: np.ndarray) -> str | None:
    distances = _distance(_PALETTE, rgb[None])
    best = int(distances.argmin())
    return _PALETTE_NAMES[best] if distances[best] <= _COLOUR_MAX else None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros(mask.shape, bool)
    best = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    if stats[best, cv2.CC_STAT_AREA] < _MIN_AREA:
        return np.zeros(mask.shape, bool)
    return np.asarray(labels == best)


def _object_masks(work: np.ndarray, background: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(T, S, S) bool: pixels nearer the object colour than the background, largest blob."""
    to_background = _distance(work, background)
    to_object = _distance(work, colour[None, None, None])
    raw = (to_object < to_background) & (to_background > _NOISE)
    return np.stack([_largest_component(m) for m in raw])


# ---------------------------------------------------------------- shape


def _harmonics(signature: np.ndarray) -> np.ndarray:
    """Amplitudes of the 3-, 4- and 5-fold harmonics of a polar signature (mean 1)."""
    spectrum = np.abs(np.fft.rfft(signature)) * 2 / len(signature)
    return np.asarray(spectrum[3:6])


def _hole(mask: np.ndarray) -> float:
    """Share of the filled outline that is hole."""
    from scipy import ndimage

    filled = float(ndimage.binary_fill_holes(mask).sum())
    return 1.0 - float(mask.sum()) / filled if filled else 0.0


def _classify_shape(masks: np.ndarray, track: _Track) -> str | None:
    """Ring by its hole, circle by a flat polar signature, else the strongest symmetry.

    A triangle's outline repeats every 120 degrees, a square's every 90 and a star's every
    72, so the 3-, 4- or 5-fold harmonic of the radius-per-angle signature dominates;
    blur and codec noise weaken it but do not move it. Uses the larger half of the frames.
    """
    found = ~np.isnan(track.area)
    if not found.any():
        return None
    large = np.flatnonzero(found & (track.area >= np.nanmedian(track.area)))
    rows = []
    for i in large:
        signature = track.signatures[i]
        if signature is not None:
            rows.append([_hole(masks[i]), *_harmonics(signature)])
    if not rows:
        return None
    hole, *amplitudes = np.median(np.array(rows), axis=0)
    if hole > _RING_HOLE:
        return "ring"
    if max(amplitudes) < _ROUND_HARMONIC:
        return "circle"
    return ("triangle", "square", "star")[int(np.argmax(amplitudes))]


# ---------------------------------------------------------------- motion


def _signature(mask: np.ndarray, cx: float, cy: float) -> np.ndarray | None:
    """Largest object radius per angle bin (counter-clockwise from +x), over its mean."""
    ys, xs = np.nonzero(mask)
    if len(xs) < _MIN_AREA:
        return None
    dx, dy = xs + 0.5 - cx, cy - (ys + 0.5)
    bins = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * _BINS).astype(int) % _BINS
    radius = np.zeros(_BINS)
    np.maximum.at(radius, bins, np.hypot(dx, dy))
    empty = radius == 0
    if empty.all():
        return None
    if empty.any():  # fill gaps circularly
        index = np.arange(_BINS)
        radius[empty] = np.interp(index[empty], index[~empty], radius[~empty], period=_BINS)
    return np.asarray(radius / radius.mean())


def _step(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation in bins taking signature ``a`` to ``b`` (sub-bin, within +-_MAX_STEP)."""
    a, b = a - a.mean(), b - b.mean()
    shifts = np.arange(-_MAX_STEP, _MAX_STEP + 1)
    corr = np.array([float(np.dot(np.roll(a, s), b)) for s in shifts])
    k = int(corr.argmax())
    if 0 < k < len(corr) - 1:
        left, mid, right = corr[k - 1], corr[k], corr[k + 1]
        bend = left - 2 * mid + right
        offset = 0.5 * (left - right) / bend if bend < 0 else 0.0
        return float(shifts[k] + offset)
    return float(shifts[k])


def _rotation(signatures: Sequence[np.ndarray | None]) -> float:
    """Summed signed rotation in degrees; 0 when the outline is round."""
    found = [s for s in signatures if s is not None]
    if len(found) < 2 or float(np.median([_harmonics(s).max() for s in found])) < _ROUND_HARMONIC:
        return 0.0
    total = sum(
        _step(a, b) for a, b in itertools.pairwise(signatures) if a is not None and b is not None
    )
    return total * 360.0 / _BINS


def _track(masks: np.ndarray) -> _Track:
    areas = masks.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.mgrid[0:_WORK, 0:_WORK]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * (xs + 0.5)).sum(axis=(1, 2)) / areas / _WORK
        cy = (masks * (ys + 0.5)).sum(axis=(1, 2)) / areas / _WORK
    areas[areas == 0] = np.nan
    signatures = [
        None if np.isnan(x) else _signature(m, x * _WORK, y * _WORK)
        for m, x, y in zip(masks, cx, cy, strict=True)
    ]
    return _Track(cx, cy, areas, signatures, _rotation(signatures))


def _net(values: np.ndarray) -> float:
    """Least-squares travel from the first frame to the last."""
    t = np.arange(len(values), dtype=np.float64)
    ok = ~np.isnan(values)
    slope = np.polyfit(t[ok], values[ok], 1)[0]
    return float(slope * (len(values) - 1))


def _classify_motion(track: _Track) -> str | None:
    ok = ~np.isnan(track.area)
    if ok.sum() < 2:
        return None
    quarter = max(1, ok.sum() // 4)
    areas = track.area[ok]
    ratio = float(areas[-quarter:].mean() / areas[:quarter].mean())
    if ratio >= _GROW:
        return "growing"
    if ratio <= 1 / _GROW:
        return "shrinking"
    net_x, net_y = _net(track.cx), _net(track.cy)
    span_y = float(np.nanmax(track.cy) - np.nanmin(track.cy))
    if span_y >= _BOUNCE and abs(net_y) < 0.5 * span_y and abs(net_x) < _TRAVEL:
        return "bouncing"
    if np.hypot(net_x, net_y) >= _TRAVEL:
        angle = float(np.degrees(np.arctan2(-net_y, net_x))) % 360
        gap = {k: abs((angle - v + 180) % 360 - 180) for k, v in _DIRECTIONS.items()}
        return min(gap, key=gap.__getitem__)
    if abs(track.rotation) >= _ROTATION:
        return "rotating"
    return "still"


# ---------------------------------------------------------------- temporal


def _temporal(work: np.ndarray) -> tuple[float, float]:
    """(flow warp error, flicker) as fractions of full scale; see the module docstring."""
    import cv2

    luma = work @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    flicker = float(np.abs(np.diff(luma.mean(axis=(1, 2)))).mean() / 255)
    gray = np.clip(luma, 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[0 : work.shape[1], 0 : work.shape[2]].astype(np.float32)
    buffer = np.zeros((*gray.shape[1:], 2), np.float32)
    errors = []
    for t in range(len(work) - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t + 1], gray[t], buffer, 0.5, 3, 15, 3, 5, 1.2, 0)
        warped = cv2.remap(
            work[t],
            xs + flow[..., 0],
            ys + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        errors.append(float(np.abs(warped - work[t + 1]).mean()))
    return float(np.mean(errors)) / 255, flicker
