"""The vocabulary of the procedural shapes world: attribute values, phrasings and splits.

A clip shows one object of a ``colour`` and ``shape`` doing a ``motion`` in front of a
``background``; the four values together are its *combo*. This module is pure Python (no
torch, no numpy), so captions and splits can be inspected anywhere.

Splits:

- :func:`compatible` drops combos that cannot be rendered or judged (an object colour too
  close to the background, a rotation nobody could see).
- :data:`HELDOUT` is a fixed ~10% of the compatible combos that training never sees, chosen
  so every single value and every pair of values of two attributes still occurs in training.
  It is derived from SHA-256 ranks, so it is the same on every Python version and machine.
- :data:`PARAPHRASES` and :data:`PARAPHRASE_TEMPLATES` are phrasings training never uses.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "BACKGROUND_STYLES",
    "COLOURS",
    "HELDOUT",
    "HELDOUT_SEED",
    "MIN_COLOUR_DISTANCE",
    "MOTIONS",
    "PARAPHRASES",
    "PARAPHRASE_TEMPLATES",
    "PHRASES",
    "SHAPES",
    "TEMPLATES",
    "BackgroundStyle",
    "Combo",
    "all_combos",
    "compatible",
    "compatible_combos",
    "fill_template",
    "is_heldout",
    "training_combos",
]

RGB = tuple[int, int, int]
Combo = tuple[str, str, str, str]  # (colour, shape, motion, background)
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "motion", "background")

# ---------------------------------------------------------------- values

# Saturated and far apart in hue, so nearest-palette classification survives H.264 chroma.
COLOURS: dict[str, RGB] = {
    "red": (230, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 30),
    "green": (30, 200, 50),
    "cyan": (0, 220, 230),
    "blue": (30, 70, 240),
    "purple": (150, 40, 220),
    "pink": (255, 100, 200),
    "white": (245, 245, 245),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")

MOTIONS: tuple[str, ...] = (
    "left",
    "right",
    "up",
    "down",
    "up-right",
    "bouncing",
    "growing",
    "shrinking",
    "rotating",
    "still",
)


@dataclass(frozen=True)
class BackgroundStyle:
    """How a background looks.

    ``top`` and ``bottom`` are the mean colours of the top and bottom rows (equal for
    solids and textures); ``detail`` is a texture's second colour (grass blades, mortar).
    """

    kind: Literal["solid", "gradient", "texture"]
    top: RGB
    bottom: RGB
    detail: RGB | None = None

    def colours(self, steps: int = 16) -> list[RGB]:
        """Colours that occur in the background (a sampled gradient plus the detail)."""
        found = [_lerp(self.top, self.bottom, i / (steps - 1)) for i in range(steps)]
        return [*found, self.detail] if self.detail else found


BACKGROUND_STYLES: dict[str, BackgroundStyle] = {
    "black": BackgroundStyle("solid", (12, 12, 16), (12, 12, 16)),
    "gray": BackgroundStyle("solid", (105, 105, 110), (105, 105, 110)),
    "sky": BackgroundStyle("gradient", (175, 215, 250), (25, 75, 170)),
    "sunset": BackgroundStyle("gradient", (250, 165, 90), (90, 35, 115)),
    "grass": BackgroundStyle("texture", (45, 105, 45), (45, 105, 45), detail=(70, 135, 55)),
    "brick": BackgroundStyle("texture", (125, 68, 55), (125, 68, 55), detail=(95, 88, 82)),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_STYLES)

# An object needs at least this RGB distance to every colour of its background.
MIN_COLOUR_DISTANCE = 100.0
# Shapes whose rotation is invisible (full rotational symmetry).
_ROUND_SHAPES = frozenset({"circle", "ring"})
# Pairs excluded by meaning although far enough in RGB ("a cyan circle on a blue sky").
_CLASHES = frozenset({("cyan", "sky"), ("purple", "sunset"), ("pink", "sunset")})


def _lerp(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _distance(a: RGB, b: RGB) -> float:
    return math.dist(a, b)


# ---------------------------------------------------------------- phrasings

PHRASES: dict[str, dict[str, list[str]]] = {
    "colour": {
        "red": ["red", "bright red", "vivid red"],
        "orange": ["orange", "bright orange", "vivid orange"],
        "yellow": ["yellow", "bright yellow", "sunny yellow"],
        "green": ["green", "bright green", "vivid green"],
        "cyan": ["cyan", "bright cyan", "aqua"],
        "blue": ["blue", "bright blue", "royal blue"],
        "purple": ["purple", "violet", "bright purple"],
        "pink": ["pink", "hot pink", "bright pink"],
        "white": ["white", "pure white", "bright white"],
    },
    "shape": {
        "circle": ["circle", "disc", "round disc"],
        "square": ["square", "square block", "box"],
        "triangle": ["triangle", "triangular shape", "three-sided shape"],
        "star": ["star", "five-pointed star", "star shape"],
        "ring": ["ring", "hollow circle", "donut"],
    },
    "motion": {
        "left": ["moving left", "moving to the left", "sliding leftwards", "drifting left"],
        "right": ["moving right", "moving to the right", "sliding rightwards", "drifting right"],
        "up": ["moving up", "rising upwards", "sliding upwards", "floating up"],
        "down": ["moving down", "falling downwards", "sliding downwards", "sinking down"],
        "up-right": [
            "moving diagonally up and to the right",
            "drifting up and to the right",
            "sliding diagonally towards the upper right",
        ],
        "bouncing": ["bouncing", "bouncing up and down", "hopping up and down"],
        "growing": ["growing", "growing larger", "expanding", "getting bigger"],
        "shrinking": ["shrinking", "getting smaller", "shrinking in size", "contracting"],
        "rotating": ["rotating", "spinning", "turning around", "rotating in place"],
        "still": ["standing still", "staying still", "not moving", "motionless"],
    },
    "background": {
        "black": ["black", "plain black", "dark"],
        "gray": ["gray", "grey", "plain gray"],
        "sky": ["sky", "clear sky", "daylight sky"],
        "sunset": ["sunset", "sunset gradient", "evening sunset"],
        "grass": ["grass", "grassy", "grass field"],
        "brick": ["brick wall", "brick", "bricks"],
    },
}

PARAPHRASES: dict[str, dict[str, list[str]]] = {
    "colour": {
        "red": ["scarlet", "cherry-red"],
        "orange": ["tangerine", "carrot-coloured"],
        "yellow": ["lemon-coloured", "canary-yellow"],
        "green": ["emerald", "leaf-green"],
        "cyan": ["turquoise", "aquamarine"],
        "blue": ["cobalt", "sapphire"],
        "purple": ["amethyst", "grape-coloured"],
        "pink": ["magenta", "fuchsia"],
        "white": ["snow-white", "ivory"],
    },
    "shape": {
        "circle": ["ball", "round dot"],
        "square": ["tile", "four-sided block"],
        "triangle": ["pyramid shape", "arrowhead"],
        "star": ["starfish shape", "pentagram"],
        "ring": ["hoop", "loop"],
    },
    "motion": {
        "left": ["travelling toward the left edge", "heading west"],
        "right": ["travelling toward the right edge", "heading east"],
        "up": ["ascending", "climbing toward the top"],
        "down": ["descending", "dropping toward the bottom"],
        "up-right": ["heading north-east", "climbing toward the top right corner"],
        "bouncing": ["jumping repeatedly", "springing up and down like a ball"],
        "growing": ["swelling in size", "inflating"],
        "shrinking": ["dwindling", "deflating"],
        "rotating": ["twirling", "revolving on the spot"],
        "still": ["at rest", "frozen in place"],
    },
    "background": {
        "black": ["pitch-dark", "jet-black"],
        "gray": ["ash-coloured", "neutral grey"],
        "sky": ["azure sky", "cloudless heavens"],
        "sunset": ["dusk", "evening twilight"],
        "grass": ["lawn", "meadow"],
        "brick": ["masonry", "brickwork"],
    },
}

TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} {motion} on a {background} background",
    "{background} backdrop, a {colour} {shape} {motion}",
    "a {colour} {shape} {motion} against a {background} background",
    "on a {background} background, a {colour} {shape} is {motion}",
    "{colour} {shape}, {motion}, {background} background",
)

PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "there is a {colour} {shape} {motion} in front of a {background} scene",
    "{background} setting with one {colour} {shape} {motion}",
    "a single {colour} {shape}, {motion}, shown over {background}",
)

_ARTICLE_RE = re.compile(r"\ba (?=[aeiou])")


def fill_template(template: str, words: dict[str, str]) -> str:
    """``template`` with its ``{attribute}`` slots filled, fixing "a" before a vowel."""
    return _ARTICLE_RE.sub("an ", template.format(**words))


# ---------------------------------------------------------------- combos


def compatible(colour: str, shape: str, motion: str, background: str) -> bool:
    """Whether a combo can be rendered and judged.

    False for unknown values, for an object colour within :data:`MIN_COLOUR_DISTANCE` of
    any colour of the background (blue or white on sky, orange on sunset, green on grass),
    for a few clashing pairs, and for rotating a circle or a ring (nothing visibly turns).
    """
    if colour not in COLOURS or shape not in SHAPES or motion not in MOTIONS:
        return False
    style = BACKGROUND_STYLES.get(background)
    if style is None or (colour, background) in _CLASHES:
        return False
    if motion == "rotating" and shape in _ROUND_SHAPES:
        return False
    rgb = COLOURS[colour]
    return min(_distance(rgb, c) for c in style.colours()) >= MIN_COLOUR_DISTANCE


def all_combos() -> list[Combo]:
    """Every combo of values, compatible or not, in a fixed order."""
    return list(itertools.product(COLOURS, SHAPES, MOTIONS, BACKGROUNDS))


def compatible_combos() -> list[Combo]:
    """Every compatible combo, in a fixed order."""
    return [combo for combo in all_combos() if compatible(*combo)]


HELDOUT_SEED = "cinecloud-shapes-heldout-v1"
_HELDOUT_FRACTION = 0.10
_MIN_PAIR_SUPPORT = 3  # every pair of values keeps at least this many training combos


def _rank(combo: Combo) -> str:
    return hashlib.sha256(f"{HELDOUT_SEED}|{'|'.join(combo)}".encode()).hexdigest()


def _pairs(combo: Combo) -> Iterable[tuple[int, str, int, str]]:
    for i, j in itertools.combinations(range(len(combo)), 2):
        yield (i, combo[i], j, combo[j])


def _choose_heldout(combos: list[Combo]) -> frozenset[Combo]:
    """Take combos in SHA-256 order while every pair of values keeps enough training support."""
    support = Counter(pair for combo in combos for pair in _pairs(combo))
    target = round(len(combos) * _HELDOUT_FRACTION)
    chosen: set[Combo] = set()
    for combo in sorted(combos, key=_rank):
        if len(chosen) == target:
            break
        pairs = list(_pairs(combo))
        if all(support[pair] > _MIN_PAIR_SUPPORT for pair in pairs):
            chosen.add(combo)
            support.subtract(pairs)
    return frozenset(chosen)


HELDOUT: frozenset[Combo] = _choose_heldout(compatible_combos())


def is_heldout(combo: tuple[str, str, str, str]) -> bool:
    """Whether ``combo`` is one of the fixed held-out combos."""
    return tuple(combo) in HELDOUT


def training_combos() -> list[Combo]:
    """Compatible combos that are not held out, in a fixed order."""
    return [combo for combo in compatible_combos() if combo not in HELDOUT]
