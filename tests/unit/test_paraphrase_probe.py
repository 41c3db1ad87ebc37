"""The paraphrase probe: its phrasings stay apart from the held-out ones, and it learns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import paraphrase_probe

from cinecloud.engine.shapes.vocab import PARAPHRASES


def test_wide_phrasings_share_no_heldout_word() -> None:
    held = paraphrase_probe.heldout_words()
    assert {"scarlet", "west", "pentagram", "masonry"} <= held
    table, templates = paraphrase_probe.phrasings("wide")
    for attribute, values in table.items():
        for value, phrases in values.items():
            assert not set(phrases) & set(PARAPHRASES[attribute][value])
            for phrase in phrases:
                assert not paraphrase_probe._words(phrase) & held, phrase
    assert len(templates) > len(paraphrase_probe.TEMPLATES)


def test_a_leaking_phrase_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = {a: {v: list(ps) for v, ps in t.items()} for a, t in paraphrase_probe.WIDE.items()}
    leaky["colour"]["red"].append("scarlet")
    monkeypatch.setattr(paraphrase_probe, "WIDE", leaky)
    with pytest.raises(ValueError, match="scarlet"):
        paraphrase_probe.phrasings("wide")


@pytest.mark.slow
def test_probe_reads_training_captions_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    args = ["--phrasings", "train", "--probes", "tokens", "nearest", "--steps", "150"]
    args += ["--captions", "1000", "--test", "200", "--json", str(out)]
    assert paraphrase_probe.main(args) == 0
    rows = {r["probe"]: r for r in json.loads(out.read_text())["rows"]}
    # Seen phrasings are fully recoverable from the states: the probe itself works.
    assert rows["tokens"]["seen"]["all"] >= 95.0
    for attribute in ("colour", "shape", "motion", "background"):
        assert 0.0 <= rows["tokens"]["paraphrase"][attribute] <= 100.0
        assert 0.0 <= rows["nearest"]["paraphrase"][attribute] <= 100.0
