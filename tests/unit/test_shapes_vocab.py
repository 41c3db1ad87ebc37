"""The shapes vocabulary: the fixed held-out split, compatibility and the phrasings."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from cinecloud.engine.shapes.vocab import (
    ATTRIBUTES,
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
    compatible_combos,
    fill_template,
    is_heldout,
    training_combos,
)

# Changing these changes what "held out" means for every trained model: do it on purpose.
HELDOUT_COUNT = 221
HELDOUT_SHA256 = "74dadcb3bc081d3936fb6204886daf99450604bb0239ae4e2caca63b3b0422b2"


def test_vocabulary_sizes() -> None:
    assert len(COLOURS) >= 8
    assert {"circle", "square", "triangle", "star", "ring"} <= set(SHAPES)
    assert len(MOTIONS) >= 8
    assert len(BACKGROUNDS) >= 5
    assert all(0 <= c <= 255 for rgb in COLOURS.values() for c in rgb)


def test_heldout_is_fixed_and_about_a_tenth() -> None:
    digest = hashlib.sha256(repr(sorted(HELDOUT)).encode()).hexdigest()
    assert len(HELDOUT) == HELDOUT_COUNT
    assert digest == HELDOUT_SHA256
    assert 0.08 <= len(HELDOUT) / len(compatible_combos()) <= 0.12


def test_heldout_combos_are_compatible_and_reported() -> None:
    assert HELDOUT
    assert all(compatible(*combo) for combo in HELDOUT)
    assert all(is_heldout(combo) for combo in HELDOUT)
    assert not any(is_heldout(combo) for combo in training_combos())
    assert set(training_combos()) | HELDOUT == set(compatible_combos())


def test_every_value_and_pair_of_values_is_still_trained() -> None:
    train = training_combos()
    compatible_set = compatible_combos()
    for i, j in itertools.combinations(range(len(ATTRIBUTES)), 2):
        possible = {(c[i], c[j]) for c in compatible_set}
        trained = {(c[i], c[j]) for c in train}
        assert trained == possible, (ATTRIBUTES[i], ATTRIBUTES[j], possible - trained)
    for i, values in enumerate((COLOURS, SHAPES, MOTIONS, BACKGROUNDS)):
        assert {c[i] for c in train} == set(values)


@pytest.mark.parametrize(
    ("colour", "shape", "motion", "background"),
    [
        ("blue", "square", "left", "sky"),
        ("white", "star", "up", "sky"),
        ("cyan", "circle", "still", "sky"),
        ("orange", "triangle", "down", "sunset"),
        ("green", "ring", "growing", "grass"),
        ("red", "circle", "rotating", "gray"),
        ("pink", "ring", "rotating", "black"),
        ("mauve", "circle", "left", "black"),
        ("red", "hexagon", "left", "black"),
        ("red", "circle", "wobbling", "black"),
        ("red", "circle", "left", "plaid"),
    ],
)
def test_compatible_excludes(colour: str, shape: str, motion: str, background: str) -> None:
    assert not compatible(colour, shape, motion, background)


@pytest.mark.parametrize(
    ("colour", "shape", "motion", "background"),
    [
        ("red", "star", "rotating", "gray"),
        ("white", "ring", "bouncing", "black"),
        ("yellow", "circle", "growing", "sky"),
        ("cyan", "square", "up-right", "brick"),
        ("green", "triangle", "rotating", "sunset"),
    ],
)
def test_compatible_keeps(colour: str, shape: str, motion: str, background: str) -> None:
    assert compatible(colour, shape, motion, background)


def test_phrasings_cover_every_value() -> None:
    values = dict(zip(ATTRIBUTES, (COLOURS, SHAPES, MOTIONS, BACKGROUNDS), strict=True))
    for table in (PHRASES, PARAPHRASES):
        assert set(table) == set(ATTRIBUTES)
        for attribute, options in table.items():
            assert set(options) == set(values[attribute])
            assert all(len(phrases) >= 2 for phrases in options.values())


def test_paraphrases_are_never_training_phrasings() -> None:
    for attribute in ATTRIBUTES:
        trained = {p for phrases in PHRASES[attribute].values() for p in phrases}
        unseen = {p for phrases in PARAPHRASES[attribute].values() for p in phrases}
        assert not trained & unseen, attribute
    assert not set(TEMPLATES) & set(PARAPHRASE_TEMPLATES)


@pytest.mark.parametrize("table", [PHRASES, PARAPHRASES])
def test_each_phrase_names_one_value(table: dict[str, dict[str, list[str]]]) -> None:
    for options in table.values():
        phrases = [p for values in options.values() for p in values]
        assert len(phrases) == len(set(phrases))


def test_only_colour_phrases_name_colours() -> None:
    colour_word = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
    for attribute in ("shape", "motion", "background"):
        for phrases in PHRASES[attribute].values():
            assert not any(colour_word.search(p) for p in phrases), phrases


@pytest.mark.parametrize("template", TEMPLATES + PARAPHRASE_TEMPLATES)
def test_templates_use_every_slot(template: str) -> None:
    for attribute in ATTRIBUTES:
        assert template.count("{" + attribute + "}") == 1


def test_fill_template_fixes_the_article() -> None:
    words = {"colour": "orange", "shape": "star", "motion": "at rest", "background": "ivory"}
    assert fill_template("a {colour} {shape} {motion} on a {background} background", words) == (
        "an orange star at rest on an ivory background"
    )
